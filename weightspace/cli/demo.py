"""Convert the built-in example networks, check round trips and write a short report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

import weightspace as ws
from weightspace.examples import build_example

from ._report import draw_parameter_graph, markdown_table, stack_equal

log = logging.getLogger(__name__)


def convert_step(cfg: DictConfig, out: Path) -> str:
    """Convert each example, time it, check the round trip bit for bit; draw one graph."""
    rows = []
    for name in tqdm(list(cfg.examples), desc="converting examples", disable=not cfg.progress):
        model, x = build_example(name, cfg.seed)
        t0 = time.perf_counter()
        spec = ws.GraphSpec.from_module(model, x)
        g = spec.to_graph(model.state_dict())
        dt = time.perf_counter() - t0
        back = spec.to_state_dict(g)
        ok = stack_equal(back, model.state_dict())
        with torch.no_grad():
            y0 = model(x)
            clone, _ = build_example(name, cfg.seed + 1)
            ws.from_graph(g, clone, spec=spec)
            ok = ok and torch.equal(clone(x), y0)
        rows.append({
            "network": name, "nodes": spec.num_nodes, "edges": spec.num_edges, "parameters": spec.num_params,
            "kernel grid": "x".join(map(str, spec.kernel_shape)), "round trip": "exact" if ok else "FAILED",
            "time (ms)": f"{dt * 1e3:.1f}",
        })
        if name == cfg.draw:
            draw_parameter_graph(g, out / f"graph_{name}.png", title=f"{name}: parameter graph")
    table = markdown_table(rows, list(rows[0]))
    print(table)
    if any(r["round trip"] != "exact" for r in rows):
        raise SystemExit("round trip failed for " + ", ".join(r["network"] for r in rows if r["round trip"] != "exact"))
    section = "## 1. Converter\n\nEvery example network converted to a parameter graph and back, bit for bit.\n\n"
    section += table + "\n"
    if cfg.draw in cfg.examples:
        section += f"\n![parameter graph of {cfg.draw}](graph_{cfg.draw}.png)\n"
    return section


def zoo_step(cfg: DictConfig, out: Path) -> str:
    """Train a small zoo of digits MLPs at once, store it, load it back, convert every run."""
    from omegaconf import OmegaConf

    import model_zoo

    from ._zoo_report import write_report

    t0 = time.perf_counter()
    zoo = model_zoo.generate(OmegaConf.to_container(cfg.zoo, resolve=True), out / "zoo", progress=cfg.progress)
    dt = time.perf_counter() - t0
    s = write_report(zoo, out / "zoo")
    acc = s["test_accuracy"]
    spec = zoo.graph_spec(0)
    graphs = [zoo.graph(i) for i in range(len(zoo))]
    exact = all(torch.equal(spec.to_state_dict(g)[k], v) for g, i in zip(graphs, range(len(zoo)))
                for k, v in zoo.state_dict(i).items())
    print(f"\nzoo: {len(zoo)} runs trained and stored in {dt:.1f} s; final test accuracy "
          f"mean {acc['mean']:.3f}, min {acc['min']:.3f}, max {acc['max']:.3f}")
    return (
        "## 2. Model zoo\n\n"
        f"{len(zoo)} digits MLPs ({cfg.zoo.name}: sampled learning rate, L2, dropout, init scale, train fraction) "
        f"trained together by the batched trainer and stored in `zoo/` in {dt:.1f} s. Final test accuracy: "
        f"mean {acc['mean']:.3f}, median {acc['median']:.3f}, range {acc['min']:.3f}–{acc['max']:.3f}; "
        f"counts {s['counts']}. Every run loads back and converts to a parameter graph of "
        f"{spec.num_nodes} nodes and {spec.num_edges} edges; round trip {'exact' if exact else 'FAILED'}.\n\n"
        "![zoo accuracy histogram](zoo/summary.png)\n"
    )


STEPS = [convert_step, zoo_step]


def run(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = [step(cfg, out) for step in STEPS]
    report = out / "report.md"
    report.write_text("# weightspace demo\n\n" + "\n".join(sections))
    print(f"\nreport: {report}")
