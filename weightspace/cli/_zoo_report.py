"""Run summary of a zoo: final test-accuracy histogram (PNG) and counts (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def summarize(zoo: Any, chance: float | None = None) -> dict[str, Any]:
    """Counts and quantiles of the final test accuracy of every run."""
    fm = zoo.final_metrics()
    acc = np.asarray(fm["test_accuracy"], dtype=float)
    loss = np.asarray(fm["test_loss"], dtype=float)
    k = zoo.info.get("dataset", {}).get("num_outputs") or 10
    chance = 1.0 / k if chance is None else chance
    fin = acc[np.isfinite(acc)]
    q = np.quantile(fin, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist() if len(fin) else [None] * 5
    return {
        "runs": len(zoo),
        "test_accuracy": {"mean": float(fin.mean()) if len(fin) else float("nan"),
                          "std": float(fin.std()) if len(fin) else float("nan"),
                          "min": q[0], "q25": q[1], "median": q[2], "q75": q[3], "max": q[4]},
        "counts": {
            "diverged": int((~np.isfinite(loss)).sum()),
            "chance_or_below": int((acc <= chance + 0.02).sum()),
            "at_least_0.5": int((acc >= 0.5).sum()),
            "at_least_0.9": int((acc >= 0.9).sum()),
            "at_least_0.95": int((acc >= 0.95).sum()),
        },
        "chance": chance,
    }


def write_histogram(acc: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(acc[np.isfinite(acc)], bins=np.linspace(0, 1, 41), color="#3b6ea5")
    ax.set_xlabel("final test accuracy")
    ax.set_ylabel("runs")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(zoo: Any, out: Path) -> dict[str, Any]:
    """Write ``summary.png`` and ``summary.json`` into ``out``; return the summary."""
    out = Path(out)
    s = summarize(zoo)
    write_histogram(np.asarray(zoo.final_metrics()["test_accuracy"], dtype=float), out / "summary.png",
                    f"{zoo.info.get('name')}: {s['runs']} runs")
    (out / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    return s
