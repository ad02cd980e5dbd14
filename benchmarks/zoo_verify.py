"""What verifying a zoo costs: ``model_zoo.load(path)`` (sizes, counts, safetensors headers) vs
``model_zoo.load(path, verify=True)`` (also the sha256 of every file) vs ``verify=False``.

Generates a digits MLP zoo of ``--size`` runs (1 epoch, checkpoints at epochs 0 and 1; reused if
``--out`` already holds it), then loads it ``--repeats`` times per mode, alternating the modes so that
drifts of the machine's speed fall on all of them, and writes the medians to
``benchmarks/results/zoo_verify.md`` with the command, date, machine and load average.

    python benchmarks/zoo_verify.py                       # 1,000 runs
    python benchmarks/zoo_verify.py --size 200 --repeats 3  # a quick check
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import model_zoo

log = logging.getLogger("zoo_verify")

CONFIG = {
    "name": "verify_bench", "seed": 0, "chunk_size": 500,
    "data": {"name": "digits", "flatten": True},
    "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 2, "width": 32},
    "space": {"lr": {"log_uniform": [1e-3, 3e-2]}, "optimizer": {"choice": ["adam", "sgd"]}, "batch_size": 64},
    "trainer": {"epochs": 1, "checkpoints": [0, 1]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="zoo folder (default: a temporary folder)")
    ap.add_argument("--report", type=Path, default=Path(__file__).parent / "results" / "zoo_verify.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "zoo"
        t0 = time.perf_counter()
        model_zoo.generate({**CONFIG, "size": args.size}, out, progress=False)
        gen_s = time.perf_counter() - t0
        nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        modes = {"verify=False": False, "default (sizes, counts, headers)": "size", "verify=True (sha256)": True}
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.repeats):
            for name, v in modes.items():
                t = time.perf_counter()
                model_zoo.load(out, verify=v)
                times[name].append(time.perf_counter() - t)
    med = {m: statistics.median(ts) for m, ts in times.items()}
    hash_extra = med["verify=True (sha256)"] - med["default (sizes, counts, headers)"]
    mb = nbytes / 1e6
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# What verifying a zoo costs",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (nproc), "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread  ",
        f"Load average (1 min) at the end: {load1:.2f} (other jobs shared the machine)  ",
        f"Zoo: digits MLP (2 hidden layers of 32), {args.size} runs x 2 checkpoints, {mb:.1f} MB on disk; "
        f"generated (or resumed) in {gen_s:.0f} s",
        "",
        f"Median of {args.repeats} loads per mode (alternating):",
        "",
        "| mode | median load time | per MB |",
        "|---|---|---|",
    ]
    for m, v in med.items():
        lines.append(f"| {m} | {v * 1e3:.1f} ms | {v * 1e3 / mb:.2f} ms/MB |")
    lines += ["",
              f"Hashing adds {hash_extra * 1e3:.1f} ms for {mb:.1f} MB, i.e. about "
              f"{mb / hash_extra if hash_extra > 0 else float('inf'):.0f} MB/s "
              f"({hash_extra / mb * 1e3:.2f} ms per MB) from the page cache; from a cold disk the disk's read "
              "speed bounds it instead. The default checks cost "
              f"{(med['default (sizes, counts, headers)'] - med['verify=False']) * 1e3:.1f} ms over verify=False.",
              ""]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))
    log.info("\n".join(lines))


if __name__ == "__main__":
    main()
