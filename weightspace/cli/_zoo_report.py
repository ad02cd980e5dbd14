"""Run summary of a zoo: final test-accuracy histogram (PNG) and counts (JSON).

Regression zoos (no accuracy) are summarized by their final test loss instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _metric(zoo: Any) -> tuple[str, np.ndarray]:
    fm = zoo.final_metrics()
    acc = np.asarray(fm["test_accuracy"], dtype=float)
    if np.isfinite(acc).any():
        return "test_accuracy", acc
    return "test_loss", np.asarray(fm["test_loss"], dtype=float)


def summarize(zoo: Any) -> dict[str, Any]:
    """Counts and quantiles of the final test accuracy (or test loss) of every run."""
    name, val = _metric(zoo)
    loss = np.asarray(zoo.final_metrics()["test_loss"], dtype=float)
    fin = val[np.isfinite(val)]
    q = np.quantile(fin, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist() if len(fin) else [None] * 5
    out: dict[str, Any] = {
        "runs": len(zoo),
        "metric": name,
        name: {"mean": float(fin.mean()) if len(fin) else None, "std": float(fin.std()) if len(fin) else None,
               "min": q[0], "q25": q[1], "median": q[2], "q75": q[3], "max": q[4]},
        "counts": {"diverged": int((~np.isfinite(loss)).sum())},
    }
    if name == "test_accuracy":
        k = zoo.info.get("dataset", {}).get("num_outputs") or 10
        chance = 1.0 / k
        out["chance"] = chance
        out["counts"].update({
            "chance_or_below": int((val <= chance + 0.02).sum()),
            "at_least_0.5": int((val >= 0.5).sum()),
            "at_least_0.9": int((val >= 0.9).sum()),
            "at_least_0.95": int((val >= 0.95).sum()),
        })
    return out


def write_histogram(values: np.ndarray, path: Path, title: str, xlabel: str = "final test accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fin = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, 1, 41) if xlabel.endswith("accuracy") else 40
    ax.hist(fin, bins=bins, color="#3b6ea5")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("runs")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(zoo: Any, out: Path) -> dict[str, Any]:
    """Write ``summary.png`` and ``summary.json`` into ``out``; return the summary."""
    out = Path(out)
    s = summarize(zoo)
    name, val = _metric(zoo)
    write_histogram(val, out / "summary.png", f"{zoo.info.get('name')}: {s['runs']} runs", f"final {name.replace('_', ' ')}")
    (out / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    return s
