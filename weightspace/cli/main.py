"""``weightspace <verb> [overrides]`` — the command-line entry point.

This package is the only place in ``weightspace`` that imports Hydra. Each verb has a
config of the same name in ``configs/`` and a function ``run(cfg)`` in
``weightspace/cli/<verb>.py``; the verb is removed from ``sys.argv`` and Hydra parses the rest
(``key=value`` overrides, ``--multirun``, ``hydra.run.dir=...``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


def verbs() -> dict[str, str]:
    """Verb -> one-line help, from the modules of this package that define ``run(cfg)``.

    Read with ``ast`` so that listing the verbs imports none of them.
    """
    import ast

    out = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        name = path.stem
        if name.startswith("_") or name == "main":
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body):
            doc = ast.get_docstring(tree) or ""
            out[name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def config_dir() -> Path:
    """Directory holding the Hydra configs.

    ``WEIGHTSPACE_CONFIGS`` overrides it; otherwise the configs installed with the package
    (``weightspace/configs``: in a checkout a link to the repository's ``configs/``, in a wheel a copy).
    """
    from importlib import resources

    env = os.environ.get("WEIGHTSPACE_CONFIGS")
    path = Path(env) if env else Path(str(resources.files("weightspace") / "configs")).resolve()
    if not (path / "demo.yaml").is_file():
        where = "WEIGHTSPACE_CONFIGS" if env else "the installed package"
        raise FileNotFoundError(
            f"weightspace configs not found at {path} (from {where}); reinstall weightspace, or set "
            "WEIGHTSPACE_CONFIGS to a folder holding the configs (the repository's configs/)"
        )
    return path


def _usage() -> str:
    lines = ["usage: weightspace <verb> [key=value ...]", "", "verbs:"]
    lines += [f"  {v:<10} {doc}" for v, doc in verbs().items()]
    lines += ["", "weightspace <verb> --help: the verb's options, defaults and examples"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in verbs():
        print(f"weightspace: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if any(a in ("-h", "--help") for a in rest):
        from ._help import verb_help
        from .schemas import SCHEMAS

        print(verb_help(verb, Path(__file__).with_name(f"{verb}.py"), config_dir(), SCHEMAS))
        return
    rest = ["--help" if a == "--hydra-help" else a for a in rest]
    module = importlib.import_module(f"weightspace.cli.{verb}")
    rest = getattr(module, "positional_overrides", lambda a: a)(rest)

    import hydra

    from .schemas import register_schemas

    register_schemas()
    task = hydra.main(config_path=str(config_dir()), config_name=verb, version_base="1.3")(module.run)
    sys.argv = [f"weightspace {verb}", *rest]
    task()


if __name__ == "__main__":
    main()
