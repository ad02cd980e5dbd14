"""``weightspace <verb> --help``: the verb's purpose, its options with defaults, and examples.

Read from the verb module's source (with ``ast``: nothing is imported) and from its YAML config
(line by line, so the comments that document each option are kept), so help prints at once.
Hydra's own help (every config group and flag) stays behind ``--hydra-help``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

__all__ = ["verb_help"]

_KEY = re.compile(r"^([A-Za-z_][\w-]*):\s*(.*?)\s*(?:#\s*(.*))?$")


def _module_info(path: Path) -> tuple[str, list[str], str]:
    """``(docstring, EXAMPLES, usage)`` of a verb module, read without importing it."""
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree) or ""
    examples: list[str] = []
    usage = ""
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if name == "EXAMPLES":
                examples = [str(v) for v in value]
            elif name == "USAGE":
                usage = str(value)
    return doc, examples, usage


def _options(yaml_path: Path, schemas: dict[str, str]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Top-level options ``(key, default, comment)`` and the config groups / schema nodes of a verb's YAML."""
    opts: list[tuple[str, str, str]] = []
    groups: list[tuple[str, str]] = []
    in_defaults = False
    skip_block = False
    for line in yaml_path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "-")):
            in_defaults = line.startswith("defaults:")
            skip_block = line.startswith("hydra:")
            if in_defaults or skip_block:
                continue
            m = _KEY.match(line)
            if m:
                key, value, comment = m.group(1), m.group(2), m.group(3) or ""
                opts.append((key, value if value else "{...}", comment))
            continue
        if in_defaults:
            entry = line.strip().lstrip("-").strip()
            if entry == "_self_":
                continue
            group, _, option = entry.partition(":")
            option = option.split("#")[0].strip()
            if group.lstrip("/").startswith("schema/"):
                name, _, node = group.lstrip("/")[len("schema/"):].partition("@")
                cls = schemas.get(name, name).replace(":", ".")
                groups.append((f"{node}.<field>=VALUE", f"fields of {cls} (defaults: the dataclass)"))
            elif option:
                groups.append((f"{group.strip().split('@')[-1]}={option}", f"config group configs/{group.split('@')[0].strip('/')}/"))
    return opts, groups


def verb_help(verb: str, module_path: Path, config_dir: Path, schemas: dict[str, str]) -> str:
    """The help text of ``verb``: purpose, usage, options with defaults, config groups, examples."""
    doc, examples, usage = _module_info(module_path)
    lines = doc.strip().splitlines()
    purpose = lines[0] if lines else ""
    if not usage and ": weightspace " in purpose:  # "Purpose: weightspace verb ARGS" first lines
        purpose, _, usage = purpose.partition(": ")
    rest = "\n".join(lines[1:]).strip()
    out = [f"weightspace {verb}: {purpose}", "", f"usage: {usage or f'weightspace {verb} [key=value ...]'}"]
    if rest:
        out += ["", rest]
    yaml_path = config_dir / f"{verb}.yaml"
    if yaml_path.is_file():
        opts, groups = _options(yaml_path, schemas)
        if opts:
            out += ["", f"options (key=value; defaults from configs/{verb}.yaml):"]
            width = min(34, max(len(f"{k}={v}") for k, v, _ in opts) + 2)
            out += [f"  {f'{k}={v}':<{width}} {c}".rstrip() for k, v, c in opts]
        if groups:
            width = min(40, max(len(g) for g, _ in groups) + 2)
            out += ["", "config nodes and groups:"] + [f"  {g:<{width}} {c}" for g, c in groups]
    if examples:
        out += ["", "examples:"] + [f"  {e}" for e in examples]
    out += ["", f"Hydra's full help (every group, launcher and flag): weightspace {verb} --hydra-help"]
    return "\n".join(out)
