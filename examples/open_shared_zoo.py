"""Open a zoo or checkpoint someone else made, safely.

    python examples/open_shared_zoo.py --zoo downloaded/zoo     # check a zoo you were sent
    python examples/open_shared_zoo.py                          # builds one, then tampers with copies
    python examples/open_shared_zoo.py --fast                   # (CI)

Files never run code: weights are safetensors, and an architecture named in a file is built only if
it is on the allowlist (the project's classes, ``torch.nn``, classes you registered). This script
verifies a zoo byte for byte against its manifest, then shows the refusals: a flipped byte, a file
that names code to run, a path that leaves the zoo's folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import model_zoo

log = logging.getLogger("examples.open_shared_zoo")


def refused(what: str, fn) -> bool:
    try:
        fn()
    except (model_zoo.ZooFormatError, model_zoo.UntrustedTargetError) as e:
        log.info("%s: refused (%s): %s", what, type(e).__name__, str(e).splitlines()[0][:200])
        return True
    log.warning("%s: NOT refused", what)
    return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--zoo", type=Path, default=None, help="a zoo to check (default: build a small one)")
    p.add_argument("--out", type=Path, default=Path("runs/examples/open_shared_zoo"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    if args.zoo is not None:
        zoo = model_zoo.load(args.zoo, verify=True)          # sha256 of every file against manifest.json
        log.info("%s: %d runs, every file matches its manifest; %s", args.zoo, len(zoo), zoo.describe())
        print(f"open_shared_zoo: {args.zoo} verified")
        return

    src = args.out / "zoo"
    cfg = {"name": "shared", "size": 4 if args.fast else 16, "data": {"name": "digits", "flatten": True},
           "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "width": 8},
           "trainer": {"epochs": 1}}
    model_zoo.generate(cfg, src, progress=False)
    zoo = model_zoo.load(src, verify=True)
    log.info("verified %d runs; run 0 builds as %s", len(zoo), type(zoo.build_model(0)).__name__)

    def copy(name: str) -> Path:
        dst = args.out / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        return dst

    flipped = copy("flipped")
    chunk = sorted(flipped.rglob("*.safetensors"))[0]
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 1
    chunk.write_bytes(bytes(raw))
    ok = refused("a flipped byte (verify=True)", lambda: model_zoo.load(flipped, verify=True))

    evil = copy("code")
    info = json.loads((evil / "zoo.json").read_text())
    info["archs"]["a0000"] = {"_target_": "os.system", "command": "echo this would run"}
    (evil / "zoo.json").write_text(json.dumps(info))
    ok &= refused("an architecture naming os.system", lambda: model_zoo.load(evil, verify=False).build_model(0))

    escape = copy("escape")
    info = json.loads((escape / "zoo.json").read_text())
    info["chunks"][0]["file"] = "../../../etc/passwd"
    (escape / "zoo.json").write_text(json.dumps(info))
    ok &= refused("a chunk path leaving the folder", lambda: model_zoo.load(escape, verify=False).build_model(0))
    print(f"open_shared_zoo: every tampered copy refused: {ok}")
    if not ok:
        raise SystemExit("open_shared_zoo: a tampered copy was opened without an error")


if __name__ == "__main__":
    main()
