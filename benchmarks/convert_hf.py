"""Hugging Face transformers through the converter: spec build + conversion time, graph size and
peak memory for a MiniLM-sized BERT, GPT-2 small and a ~100M-parameter Llama-style model (all
randomly initialised from configs, nothing downloaded), and the nowcasting hook's per-jump time on
the MiniLM-sized model.

    python benchmarks/convert_hf.py [--repeats 3] [--threads 1] [--out benchmarks/results]

Writes ``convert_hf.json`` and ``convert_hf.md``. Every measurement runs in a fresh process.
Memory: ``peak RSS increase`` is the process's peak resident set (``getrusage`` ``ru_maxrss``) after
the spec build and conversion minus its resident set just before them (model built, example input
made); ``graph bytes`` counts the storage of every tensor of the ``ParameterGraph`` once (weights at
their true kernel size, ``kernel_runs`` a few rows); ``index maps`` are the spec's slice segments and
gather maps, kept with the spec.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODELS = ("minilm", "gpt2_small", "llama_100m")
TARGETS = {"minilm": ("≤ 5 s", 5.0, 4.0), "gpt2_small": ("≤ 30 s", 30.0, None), "llama_100m": ("—", None, None)}


def make(name: str):
    """The model and an example input (random init, seed 0)."""
    import transformers

    torch.manual_seed(0)
    if name == "minilm":
        cfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                      intermediate_size=1536, max_position_embeddings=512)
        model = transformers.BertModel(cfg)
    elif name == "gpt2_small":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config())  # tied lm_head <-> wte
    elif name == "llama_100m":
        cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                                       num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048)
        model = transformers.LlamaForCausalLM(cfg)  # untied head, grouped-query attention, rotary
    else:
        raise ValueError(name)
    ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    return model.eval(), ids


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def convert_once(name: str) -> dict:
    """Fresh process: build the model, then time and measure spec build + one conversion."""
    import weightspace as ws

    model, ids = make(name)
    state = model.state_dict()
    unique = {id(t): t for t in model.state_dict(keep_vars=True).values()}
    param_bytes = sum(t.numel() * t.element_size() for t in unique.values() if t.is_floating_point())
    rss0, max0 = _rss(), _maxrss()
    t0 = time.perf_counter()
    spec = ws.GraphSpec.from_module(model, ids)
    t1 = time.perf_counter()
    g = spec.to_graph(state)
    t2 = time.perf_counter()
    max1 = _maxrss()
    # the structure as stored: edge segments (+ explicit leftovers), or an explicit edge_index
    structure = storage_bytes([v for k, v in g if k in ("edge_segments", "edge_rest", "edge_index", "edge_type",
                                                         "kernel_runs")])
    back = spec.to_state_dict(g)
    exact = all(torch.equal(back[k], v) for k, v in state.items())
    return {
        "params": sum(p.numel() for p in model.parameters()), "param_bytes": param_bytes,
        "nodes": spec.num_nodes, "edges": spec.num_edges,
        "vocab_rows": int((g.node_type == ws.graph.NodeType.VOCAB).sum()),
        "spec_s": t1 - t0, "convert_s": t2 - t1, "total_s": t2 - t0,
        "graph_bytes": storage_bytes([v for _, v in g]), "structure_bytes": structure,
        "index_map_bytes": storage_bytes([spec.segments, spec.gather_slot, spec.gather_src]),
        "rss_before_bytes": rss0, "peak_rss_increase_bytes": max1 - rss0, "peak_before_conversion": max0 >= max1,
        "round_trip_exact": exact,
    }


def jump_once(name: str, kind: str = "graph", jumps: int = 3) -> dict:
    """Fresh process: attach the nowcasting hook and time ``jumps`` jumps (period = context; the first
    jump also builds the nowcaster's per-architecture indices). ``kind``: ``graph`` (the shipped
    nowcaster, or an untrained one of its config if the shipped checkpoint does not load), ``mlp`` or
    ``linefit`` (untrained, same sizes: the hook's own cost)."""
    from weightspace.nowcast import Nowcaster

    limit = int(float(os.environ.get("CONVERT_HF_JUMP_GIB", "12")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a shared machine: fail rather than swap others out
    model, ids = make(name)
    if kind != "graph":
        nowcaster, which = Nowcaster(kind=kind, hidden=32, layers=2), "untrained"
    else:
        try:
            nowcaster, which = Nowcaster.pretrained(), "shipped checkpoint"
        except Exception as exc:  # noqa: BLE001 - the shipped checkpoint may lag the nowcaster's format
            nowcaster, which = Nowcaster(kind="graph", hidden=32, layers=2), f"untrained, shipped config ({exc})"
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # steps without gradients: the hook's cost only
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rss0 = _rss()
    t0 = time.perf_counter()
    hook = nowcaster.attach(model, opt, period=nowcaster.context, horizon=1, example_input=ids)
    attach_s = time.perf_counter() - t0
    attach_peak = _maxrss()
    for _ in range(nowcaster.context * jumps):
        opt.step()
    return {
        "nowcaster": repr(nowcaster), "which": which, "attach_s": attach_s, "param_bytes": param_bytes,
        "params": sum(p.numel() for p in model.parameters()), "ring_buffer_bytes": hook._buf.numel() * 4,
        "jump_s": [h["seconds"] for h in hook.history], "applied": [h["applied"] for h in hook.history],
        "attach_peak_rss_increase_bytes": attach_peak - rss0,
        "peak_rss_increase_bytes": _maxrss() - rss0, "rss_before_bytes": rss0,
    }


def encode_once(name: str, rows: int) -> dict:
    """Fresh process: a graph metanetwork's embedding of the model's graph (all rows, or ``rows``
    sampled embedding rows), without gradients, message passing in edge chunks."""
    import weightspace as ws
    from weightspace.nn import GMNConv, GraphMetaNet

    limit = int(float(os.environ.get("CONVERT_HF_JUMP_GIB", "12")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    model, ids = make(name)
    g = ws.to_graph(model, ids)
    del model
    if rows:
        g = ws.graph.sample_rows(g, rows, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = GraphMetaNet(hidden=32, num_layers=2, embed_dim=32, kernel_grid=(1, 1)).eval()
    rss0 = _rss()
    t0 = time.perf_counter()
    with torch.no_grad():
        z = net.encode(g)
    return {"rows": rows or "all", "nodes": g.num_nodes, "edges": g.num_edges, "hidden": 32, "layers": 2,
            "chunk_edges": GMNConv.chunk_edges, "encode_s": time.perf_counter() - t0,
            "finite": bool(torch.isfinite(z).all()), "peak_rss_increase_bytes": _maxrss() - rss0}


def _stats(xs: list[float]) -> dict:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _child(kind: str, name: str, threads: int, timeout: float) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", kind, name, "--threads", str(threads)],
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(repeats: int, threads: int, jump: bool, timeout: float, parts: set[str]) -> dict:
    out: dict = {}
    for name in MODELS if "convert" in parts else ():
        loads, runs = [], []
        for _ in range(repeats):
            loads.append(_load())
            runs.append(_child("convert", name, threads, timeout))
        ok = [r for r in runs if "error" not in r]
        if not ok:
            out[name] = {"error": runs[0]["error"]}
            continue
        r0 = ok[0]
        out[name] = {
            **{k: r0[k] for k in ("params", "param_bytes", "nodes", "edges", "vocab_rows", "graph_bytes",
                                  "structure_bytes", "index_map_bytes")},
            "spec_s": _stats([r["spec_s"] for r in ok]), "convert_s": _stats([r["convert_s"] for r in ok]),
            "total_s": _stats([r["total_s"] for r in ok]),
            "graph_over_param_bytes": r0["graph_bytes"] / r0["param_bytes"],
            "structure_bytes_per_edge": r0["structure_bytes"] / r0["edges"],
            "peak_rss_increase_bytes": _stats([float(r["peak_rss_increase_bytes"]) for r in ok]),
            "peak_rss_over_param_bytes": _stats([r["peak_rss_increase_bytes"] / r0["param_bytes"] for r in ok]),
            "peak_before_conversion": any(r["peak_before_conversion"] for r in ok),
            "round_trip_exact": all(r["round_trip_exact"] for r in ok), "load_avg_before_each": loads,
            "errors": [r["error"] for r in runs if "error" in r],
        }
    if jump and "jump" in parts:
        for kind in ("graph", "mlp", "linefit"):
            key = "hook_minilm" if kind == "graph" else f"hook_minilm_{kind}"
            out[key] = {"load_avg_before": _load(), **_child(f"jump{kind}", "minilm", threads, timeout)}
        out["hook_gpt2_small"] = {"load_avg_before": _load(), **_child("jumpgraph", "gpt2_small", threads, timeout)}
    for rows in (0, 1024) if "encode" in parts else ():
        out[f"encode_minilm_{rows or 'all'}"] = {"load_avg_before": _load(),
                                                 **_child(f"encode{rows}", "minilm", threads, timeout)}
    return out


def markdown(res: dict) -> str:
    r = res["results"]
    lines = [
        "# Hugging Face transformers through the converter",
        "",
        f"Machine: {res['machine']}; torch {res['torch']}, transformers {res['transformers']}; "
        f"{res['repeats']} repeats, each in a fresh process (mean ± std). CUDA: {res['cuda']}.",
        f"Command: `{res['command']}`. Load average (1, 5, 15 min) at the start: {res['load_avg_start']} "
        "(the 2 cores are shared with other work; timings include that)."
        + "".join(f" Partial rerun: `{r['command']}` (load {r['load_avg_start']})." for r in res.get("reruns", [])),
        "",
        "| model | parameters | nodes | edges | spec build | conversion | total | target | graph bytes / param "
        "bytes | structure bytes / edge | peak RSS increase | peak RSS increase / param bytes | round trip |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m = r.get(name, {})
        if "error" in m:
            lines.append(f"| {name} | failed: {m['error']} |")
            continue
        f = lambda s: f"{s['mean']:.2f} ± {s['std']:.2f} s"  # noqa: E731
        target = TARGETS[name][0] + (" and ≤ 4× param bytes" if TARGETS[name][2] else "")
        lines.append(
            f"| {name} | {m['params']:,} | {m['nodes']:,} | {m['edges']:,} | {f(m['spec_s'])} | {f(m['convert_s'])} "
            f"| {f(m['total_s'])} | {target} | {m['graph_over_param_bytes']:.2f} | {m['structure_bytes_per_edge']:.2f} "
            f"| {m['peak_rss_increase_bytes']['mean'] / 2**30:.2f} GiB "
            f"| {m['peak_rss_over_param_bytes']['mean']:.2f} | {'exact' if m['round_trip_exact'] else 'FAILED'} |")
    lines += [
        "",
        "Spec build = tracing with `torch.export` + walking the traced graph + building the index maps; "
        "conversion = `spec.to_graph(state_dict)` (one encode). The embedding table is represented in full: "
        "every row a `VOCAB` node, every entry an `EMBEDDING` edge "
        + ", ".join(f"({n}: {r[n]['vocab_rows']:,} rows)" for n in MODELS if "vocab_rows" in r.get(n, {})) + ".",
        "Graph bytes count each stored tensor once (weights, node features, the edge structure as "
        "affine segments `edge_segments` + explicit leftovers `edge_rest`, `edge_type` int8, `kernel_runs` a "
        "few rows; a decoded `edge_index` adds 8 bytes per edge on first access); the spec's index maps add "
        + ", ".join(f"{n}: {r[n]['index_map_bytes'] / r[n]['param_bytes']:.2f}×" for n in MODELS
                    if "index_map_bytes" in r.get(n, {}))
        + " param bytes. Peak RSS increase = `ru_maxrss` after conversion − RSS just before the spec build"
        " (so it includes tracing, the index maps and the graph).",
        "",
    ]
    hooks = [(k, r[k]) for k in ("hook_minilm", "hook_minilm_mlp", "hook_minilm_linefit", "hook_gpt2_small") if k in r]
    if hooks:
        lines += ["## Nowcasting hook on CPU (12 GiB address-space limit per process)", "",
                  "| model | nowcaster | attach (spec build included) | per jump (first builds the indices) "
                  "| peak RSS increase: attach / all | ring buffer | load before |",
                  "|---|---|---|---|---|---|---|"]
        for k, h in hooks:
            model = "gpt2_small" if k == "hook_gpt2_small" else "minilm"
            kind = {"hook_minilm_mlp": "mlp", "hook_minilm_linefit": "linefit"}.get(k, "graph")
            if "error" in h:
                lines.append(f"| {model} | {kind} | failed: {h['error']} | | | | {h['load_avg_before']} |")
                continue
            js = ", ".join(f"{s:.2f} s" for s in h["jump_s"])
            att = h.get("attach_peak_rss_increase_bytes")
            peak = (f"{att / 2**30:.2f} / " if att is not None else "") + f"{h['peak_rss_increase_bytes'] / 2**30:.2f} GiB"
            ring = f"{h['ring_buffer_bytes'] / 2**30:.2f} GiB" if "ring_buffer_bytes" in h else "—"
            lines.append(f"| {model} | {kind}: {h['nowcaster']} ({h['which']}) | {h['attach_s']:.2f} s | {js} "
                         f"| {peak} | {ring} | {h['load_avg_before']} |")
        lines += ["", "The hook keeps `context` flat float32 snapshots (the ring buffer). A jump predicts one "
                  "window in chunks of parameters (`weightspace.nowcast.stream`): weight tensors that are "
                  "full bipartite blocks between neurons (linear layers, embedding tables, fused projections) "
                  "aggregate and pass messages with matrix products, so the per-parameter index tensors of the "
                  "batched path are never built. Peak RSS increase is over the process before `attach` "
                  "(tracing and the spec's index maps included).", ""]
    enc = [(k, r[k]) for k in ("encode_minilm_all", "encode_minilm_1024") if k in r]
    if enc:
        lines += ["## Graph metanetwork embedding, MiniLM-sized BERT (CPU, no gradients)", "",
                  "| embedding rows | nodes | edges | time | peak RSS increase |", "|---|---|---|---|---|"]
        for _, e in enc:
            if "error" in e:
                lines.append(f"| — | failed: {e['error']} |")
                continue
            lines.append(f"| {e['rows']} | {e['nodes']:,} | {e['edges']:,} | {e['encode_s']:.2f} s "
                         f"| {e['peak_rss_increase_bytes'] / 2**30:.2f} GiB |")
        e0 = next((e for _, e in enc if "error" not in e), None)
        if e0:
            lines += ["", f"`GraphMetaNet(hidden={e0['hidden']}, num_layers={e0['layers']})`, random init; "
                      f"message passing in chunks of {e0['chunk_edges']:,} edges; rows sampled with "
                      "`weightspace.graph.sample_rows` (NiNo-style). The peak is over the graph already in memory.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per child process")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--no-jump", action="store_true", help="skip the nowcasting-hook measurement")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    ap.add_argument("--parts", default="convert,jump,encode",
                    help="comma-separated subset of convert,jump,encode; the others are kept from an existing "
                         "convert_hf.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, name = args.child
        if kind.startswith("encode"):
            print(json.dumps(encode_once(name, int(kind[len("encode"):]))))
        else:
            print(json.dumps(convert_once(name) if kind == "convert" else jump_once(name, kind[len("jump"):])))
        return
    import transformers

    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s) per process",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": "not available on this machine" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "repeats": args.repeats, "load_avg_start": _load(),
        "command": "python benchmarks/convert_hf.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "results": run(args.repeats, args.threads, not args.no_jump, args.timeout, set(args.parts.split(","))),
    }
    old = args.out / "convert_hf.json"
    if args.parts != "convert,jump,encode" and old.exists():  # a partial rerun: keep the other parts
        prev = json.loads(old.read_text())
        res["results"] = {**prev["results"], **res["results"]}
        res["reruns"] = prev.get("reruns", []) + [{"command": res["command"], "load_avg_start": res["load_avg_start"]}]
        res["command"], res["load_avg_start"] = prev["command"], prev["load_avg_start"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convert_hf.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (args.out / "convert_hf.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
