"""Wall time of each verb's default (laptop) settings and of reduced budgets, on a 1,000-run digits zoo.

Runs every case below as a ``weightspace`` subprocess on this machine, times it, records the
1-minute load average before and after, and reads its quality figure: ``predict`` the test Kendall
τ (``metrics.json``), ``generate`` the samples' test accuracy (``report.json``), ``hyper train`` its
last logged training accuracy (``history.json``). The zoo is made
first (``weightspace zoo digits_mlp out=<work>/zoo threads=1``); every case starts from an empty
output folder unless ``--keep``.

Writes ``benchmarks/results/laptop_defaults.json`` and ``.md`` from every case's row in
``<work>/rows/``; ``--only`` reruns some cases and keeps the others' earlier rows (``--only`` with no
case rewrites the results from the rows alone).

    python benchmarks/laptop_defaults.py                    # every case
    python benchmarks/laptop_defaults.py --only predict_probe generate_default
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("benchmarks.laptop_defaults")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# p-diff learns one architecture: one of the zoo's three (they differ in activation)
PDIFF_ARCH = "arch={_target_:model_zoo.archs.MLP,in_features:64,num_outputs:10,depth:2,width:32,activation:relu}"


def cases(work: Path) -> dict[str, dict]:
    """name -> ``{"verb", "args", "out", "kind"}``; ``out`` is the folder the case writes."""
    zoo = f"zoo={work / 'zoo'}"

    def predict(name: str, *args: str) -> dict:
        out = work / name
        return {"verb": "predict", "args": [zoo, *args, "threads=1", "progress=false", "embedding_plot=false",
                                             f"hydra.run.dir={out}"], "out": out, "kind": "predict"}

    def generate(name: str, *args: str) -> dict:
        out = work / name
        return {"verb": "generate", "args": [zoo, "n=20", *args, "progress=false", "plot=false", f"out={out}"],
                "out": out, "kind": "generate"}

    hyper_out = work / "hyper_default"
    return {
        "zoo": {"verb": "zoo", "args": ["digits_mlp", f"out={work / 'zoo'}", "threads=1", "progress=false"],
                "out": work / "zoo", "kind": "zoo"},
        "predict_gmn": predict("predict_gmn", "metanet=gmn"),
        "predict_probe": predict("predict_probe", "metanet=probe"),
        "generate_default": generate("generate_default"),
        "generate_paper_budget_ae600_ddpm1000": generate("generate_paper_budget_ae600_ddpm1000", "preset=paper",
                                                         "graph.ddpm_steps=1000"),
        "generate_ae100_ddpm500": generate("generate_ae100_ddpm500", "graph.ae_steps=100", "graph.ddpm_steps=500"),
        "generate_pdiff_ae300_ddpm1000": generate("generate_pdiff_ae300_ddpm1000", "kind=pdiff", "pdiff.ae_steps=300",
                                                  "pdiff.ddpm_steps=1000", PDIFF_ARCH),
        "hyper_default": {"verb": "hyper", "args": ["train", f"out={hyper_out}", f"hydra.run.dir={hyper_out / 'run'}",
                                                    "progress=false"], "out": hyper_out, "kind": "hyper"},
    }


def quality(case: dict) -> dict:
    """The case's quality figures, read from what it wrote."""
    out = Path(case["out"])
    if case["kind"] == "predict":
        m = json.loads((out / "metrics.json").read_text())
        return {"test/tau": m["test/tau"], "test/r2": m["test/r2"], "test/mae": m["test/mae"],
                "metanet": m["metanet"]}
    if case["kind"] == "generate":
        r = json.loads((out / "report.json").read_text())
        acc = [float(x["test_accuracy"]) for x in r["samples"] if x.get("test_accuracy") is not None]
        res = {"architectures": len(r["results"]), "sample_test_accuracy_mean": statistics.fmean(acc),
               "sample_test_accuracy_median": statistics.median(acc), "sample_test_accuracy_best": max(acc)}
        for group in ("training", "heldout"):
            means = [row[group]["test_accuracy"]["mean"] for row in r["results"] if group in row]
            if means:
                res[f"{group}_test_accuracy_mean"] = statistics.fmean(means)  # each architecture weighs the same
        return res
    if case["kind"] == "hyper":
        history = json.loads((out / "run" / "history.json").read_text())
        return {"steps": history[-1]["step"], "train/accuracy_last": history[-1]["train/accuracy"]}
    summary = json.loads((out / "summary.json").read_text())
    return {"runs": summary["runs"], "test_accuracy_median": summary["test_accuracy"]["median"]}


def run_case(name: str, case: dict, fresh: bool) -> dict:
    """Run one case as a subprocess; wall time, load average before/after, return code, quality."""
    if fresh and Path(case["out"]).exists():
        shutil.rmtree(case["out"])  # zoo and generate resume from their folder; a timing needs a fresh one
    cmd = [sys.executable, "-m", "weightspace.cli.main", case["verb"], *case["args"]]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"command": "weightspace " + " ".join([case["verb"], *case["args"]]), "wall_s": round(wall, 1),
           "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "returncode": proc.returncode,
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if proc.returncode == 0:
        row.update(quality(case))
    else:
        row["stderr_tail"] = proc.stderr[-2000:]
    log.info("%s: %.1f s (load %.2f -> %.2f) rc %d", name, wall, row["load_before"], row["load_after"], proc.returncode)
    return row


def write(rows: dict[str, dict], machine: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "laptop_defaults", "machine": machine, "cases": rows}
    (RESULTS / "laptop_defaults.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Laptop-sized defaults: wall time per verb on a 1,000-run digits zoo", "",
             f"Machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}; "
             "torch threads 1 (`threads=1`); load = the 1-minute load average before/after each command "
             "(about 1: it ran alone; about 2: another case ran beside it on the second core).",
             "Written by `python benchmarks/laptop_defaults.py`. Cases named `*_default` pass no budget, i.e. run "
             "the default `preset=laptop` (`configs/preset/<verb>/laptop.yaml`); `predict_probe` is predict's "
             "default metanetwork and `predict_gmn` that of `preset=paper`.", "",
             "| case | command | wall (s) | load before/after | quality |", "|---|---|---:|---|---|"]
    for name, r in rows.items():
        q = {k: v for k, v in r.items() if k not in ("command", "wall_s", "load_before", "load_after", "returncode",
                                                        "date", "stderr_tail")}
        qs = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in q.items())
        if r["returncode"]:
            qs = f"failed (rc {r['returncode']})"
        lines.append(f"| {name} | `{r['command']}` | {r['wall_s']:.1f} | {r['load_before']:.2f} / {r['load_after']:.2f} "
                     f"| {qs} |")
    (RESULTS / "laptop_defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "laptop"), help="folder for the zoo and every case's output")
    ap.add_argument("--only", nargs="*", default=None, help="cases to (re)run; the others keep their earlier figures")
    ap.add_argument("--keep", action="store_true", help="let zoo and generate resume from an earlier folder (no fresh timing)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.work).resolve()
    all_cases = cases(work)
    unknown = set(args.only or []) - set(all_cases)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; choose from {sorted(all_cases)}")
    rows_dir = work / "rows"  # one file per case, so that runs of different cases may go side by side
    rows_dir.mkdir(parents=True, exist_ok=True)
    if args.only is None:
        for f in rows_dir.glob("*.json"):
            f.unlink()
    for name, case in all_cases.items():
        if args.only is None or name in args.only:
            (rows_dir / f"{name}.json").write_text(json.dumps(run_case(name, case, fresh=not args.keep), indent=1))
    rows = {k: json.loads((rows_dir / f"{k}.json").read_text()) for k in all_cases if (rows_dir / f"{k}.json").is_file()}
    for name, row in rows.items():  # quality figures are re-read from each case's output while it is there
        row["command"] = row["command"].replace(f"{ROOT}/", "")
        if row["returncode"] == 0 and Path(all_cases[name]["out"]).exists():
            row.update(quality(all_cases[name]))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    write(rows, machine)


if __name__ == "__main__":
    main()
