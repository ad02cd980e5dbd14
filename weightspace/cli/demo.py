"""A tour of the capabilities: convert, build a zoo, predict accuracy, nowcast, fill with the hypernetwork.

Converts the built-in example networks (round trips checked bit for bit, one graph drawn), builds
a small digits MLP zoo, trains three accuracy predictors on it and accelerates a training run with
the shipped nowcaster, and fills unseen architectures with the shipped hypernetwork; writes
``report.md`` with the figures into the run folder.
"""

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

EXAMPLES = (
    "weightspace demo",
    "weightspace demo hydra.run.dir=runs/my_demo draw=resnet",
)


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


def predict_step(cfg: DictConfig, out: Path) -> str:
    """Learn to predict test accuracy from weights on the zoo (graph metanetwork, probing, StatNN)."""
    import model_zoo
    from weightspace.predict import PredictConfig, load_zoo_graphs, run_predict

    zoo = model_zoo.load(out / "zoo")
    data = load_zoo_graphs(zoo, "test_accuracy", (0.6, 0.2, 0.2), 0, None, False)
    rows = []
    for metanet in ("gmn", "probe", "statnn"):
        t0 = time.perf_counter()
        pred, m = run_predict(zoo, PredictConfig(metanet=metanet, epochs=cfg.predict_epochs, progress=False,
                                                 device="cpu"), out / f"predict_{metanet}", data=data)
        rows.append({"predictor": metanet, "test τ": f"{m['test/tau']:.3f}", "test R²": f"{m['test/r2']:.3f}",
                     "test MAE": f"{m['test/mae']:.3f}", "train time (s)": f"{time.perf_counter() - t0:.1f}"})
    table = markdown_table(rows, list(rows[0]))
    print("\n" + table)
    model = zoo.build_model(0)
    answer = ws.load_predictor(out / "predict_gmn" / "predictor")(model)
    true = float(zoo.final_metrics()["test_accuracy"][0])
    return (
        "## 3. Predicting accuracy from weights\n\n"
        f"Trained on {len(data.graphs['train'])} runs, selected on {len(data.graphs['val'])}, tested on "
        f"{len(data.graphs['test'])} (a toy split of the demo zoo — `benchmarks/results/predict.md` has "
        "the real figures).\n\n" + table + "\n\n"
        f"The saved predictor answers for an `nn.Module`: run 0 has test accuracy {true:.3f}, predicted "
        f"{float(answer):.3f} (`ws.load_predictor('predict_gmn/predictor')(model)`).\n"
    )


def nowcast_step(cfg: DictConfig, out: Path) -> str:
    """Adam vs Adam + the shipped nowcaster on a digits MLP: same init, same batches."""
    import model_zoo

    from ._report import plot_curves

    data = model_zoo.load_dataset("digits", test_fraction=0.2, seed=0, flatten=True)
    curves = {}
    for name in ("Adam", "Adam + nowcaster"):
        torch.manual_seed(cfg.seed)
        model = model_zoo.MLP(in_features=64, num_outputs=10, depth=2, width=32)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        handle = None
        if name != "Adam":
            handle = ws.Nowcaster.pretrained().attach(model, opt, total_steps=cfg.nowcast_steps)
        gen = torch.Generator().manual_seed(cfg.seed)
        accs = []
        t0 = time.perf_counter()
        for step in range(cfg.nowcast_steps):
            idx = torch.randint(0, len(data.x_train), (32,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 10 == 0:
                with torch.no_grad():
                    accs.append((step + 1, float((model(data.x_test).argmax(1) == data.y_test).float().mean())))
        if handle is not None:
            handle.remove()
        curves[name] = (accs, time.perf_counter() - t0)
    target = max(a for _, a in curves["Adam"][0][-3:]) if curves["Adam"][0] else 0.0
    first = {k: next((s for s, a in v[0] if a >= target), None) for k, v in curves.items()}
    plot_curves({k: v[0] for k, v in curves.items()}, out / "nowcast.png", "test accuracy", "optimizer step")
    lines = [f"- {k}: final test accuracy {v[0][-1][1]:.3f}, reaches {target:.3f} at step {first[k]}, "
             f"{v[1]:.1f} s" for k, v in curves.items()]
    print("\n" + "\n".join(lines))
    return ("## 4. Nowcasting\n\nOne line in a plain loop: `ws.Nowcaster.pretrained().attach(model, opt)`; "
            f"a digits MLP, {cfg.nowcast_steps} steps, same init and batches (one seed — "
            "`benchmarks/results/nowcast.md` has the multi-seed figures):\n\n" + "\n".join(lines)
            + "\n\n![accuracy curves](nowcast.png)\n")


def hyper_step(cfg: DictConfig, out: Path) -> str:
    """Zero-shot weights for architectures the shipped hypernetwork never saw."""
    import model_zoo

    data = model_zoo.load_dataset("digits", test_fraction=0.2, seed=0, flatten=False)
    hyper = ws.load_hypernetwork()
    rows = []
    for name, make in (("MLP 64-40-24-10", lambda: model_zoo.MLP(64, 10, 2, [40, 24])),
                       ("MLP 64-56-10 (tanh)", lambda: model_zoo.MLP(64, 10, 1, 56, "tanh"))):
        torch.manual_seed(cfg.seed)
        model = make()
        with torch.no_grad():
            rand = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
            hyper(model)
            pred = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
        rows.append({"architecture": name, "random init": f"{rand:.3f}", "predicted, no training": f"{pred:.3f}"})
    table = markdown_table(rows, list(rows[0]))
    print("\n" + table)
    return ("## 5. Weights for unseen architectures\n\n`model = ws.load_hypernetwork()(model)` fills a new "
            "network in one forward pass; digits test accuracy:\n\n" + table + "\n")


STEPS = [convert_step, zoo_step, predict_step, nowcast_step, hyper_step]


def run(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = [step(cfg, out) for step in STEPS]
    report = out / "report.md"
    report.write_text("# weightspace demo\n\n" + "\n".join(sections))
    print(f"\nreport: {report}")
