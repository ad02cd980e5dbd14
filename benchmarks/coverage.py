"""Converter coverage of architectures written by other libraries. Two corpora:

* ``transformers`` (default): every listed Hugging Face model type, built from a tiny config (hidden
  size ~32, 2 layers, 32x32 images or 8 tokens) -> ``coverage.md|json``;
* ``monai``: the MONAI networks (``monai.networks.nets``: classifiers, U-Nets, autoencoders,
  transformers for medical images) built 2-D (``spatial_dims=2``, 1x32x32 inputs, a few channels)
  and a 3-D ResNet -> ``coverage_monai.md|json``.

Random init, nothing downloaded. Each model is converted with ``to_graph(model, example_input=...)``
and classified:

* **converted**: ``decode(encode)`` is bit-exact for every state-dict entry, and a fresh copy of
  the model (another seed) written with ``from_graph`` computes bit-identical outputs;
* **refused**: the converter raised ``UnsupportedModuleError`` (naming module and operation; the
  message is recorded);
* **wrong**: anything else (another exception, an inexact round trip, other outputs, a timeout).

Model types not installed, or whose tiny config the installed version rejects, are listed apart
and not counted.

    python benchmarks/coverage.py [--corpus transformers|monai] [--timeout 60] [--only bert,vit]
                                  [--out benchmarks/results]

Writes ``coverage[_monai].json`` and ``.md`` (command, date, machine, load, versions inside) and
prints the table. All models run in one process, one after another, each under a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from convert_hf import storage_bytes

SEQ, IMG = 8, 32
VOCAB = 64
TEXT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
DECODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=64, max_position_embeddings=32)
VIT = dict(image_size=IMG, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

#: model type -> (config class, model class, config arguments, input: "image" | "text" | "text2text")
MODELS: dict[str, tuple[str, str, dict, str]] = {
    # vision
    "resnet": ("ResNetConfig", "ResNetModel",
               dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"), "image"),
    "convnext": ("ConvNextConfig", "ConvNextModel", dict(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]), "image"),
    "convnextv2": ("ConvNextV2Config", "ConvNextV2Model",
                   dict(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]), "image"),
    "mobilenet_v1": ("MobileNetV1Config", "MobileNetV1Model",
                     dict(image_size=IMG, depth_multiplier=0.25, min_depth=4), "image"),
    "mobilenet_v2": ("MobileNetV2Config", "MobileNetV2Model",
                     dict(image_size=IMG, depth_multiplier=0.25, min_depth=4), "image"),
    "efficientnet": ("EfficientNetConfig", "EfficientNetModel",
                     dict(image_size=IMG, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320), "image"),
    "regnet": ("RegNetConfig", "RegNetModel",
               dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8), "image"),
    "vit": ("ViTConfig", "ViTModel", VIT, "image"),
    "deit": ("DeiTConfig", "DeiTModel", VIT, "image"),
    "beit": ("BeitConfig", "BeitModel", VIT, "image"),
    "dinov2": ("Dinov2Config", "Dinov2Model", VIT, "image"),
    "swin": ("SwinConfig", "SwinModel",
             dict(image_size=IMG, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4), "image"),
    "swinv2": ("Swinv2Config", "Swinv2Model",
               dict(image_size=IMG, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
               "image"),
    "levit": ("LevitConfig", "LevitModel",
              dict(image_size=IMG, hidden_sizes=[32, 48, 64], num_attention_heads=[2, 3, 4], depths=[1, 1, 1],
                   key_dim=[8, 8, 8]), "image"),
    "poolformer": ("PoolFormerConfig", "PoolFormerModel",
                   dict(hidden_sizes=[16, 16, 32, 32], depths=[1, 1, 1, 1]), "image"),
    "mobilevit": ("MobileViTConfig", "MobileViTModel",
                  dict(image_size=IMG, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32]),
                  "image"),
    "cvt": ("CvtConfig", "CvtModel", dict(embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3]), "image"),
    "segformer": ("SegformerConfig", "SegformerModel",
                  dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                       patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                       decoder_hidden_size=32), "image"),
    # text
    "bert": ("BertConfig", "BertModel", TEXT, "text"),
    "roberta": ("RobertaConfig", "RobertaModel", TEXT, "text"),
    "albert": ("AlbertConfig", "AlbertModel", dict(TEXT, embedding_size=16), "text"),
    "electra": ("ElectraConfig", "ElectraModel", dict(TEXT, embedding_size=16), "text"),
    "deberta": ("DebertaConfig", "DebertaModel", TEXT, "text"),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model", TEXT, "text"),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=32),
                   "text"),
    "gpt2": ("GPT2Config", "GPT2Model", dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32), "text"),
    "gpt_neo": ("GPTNeoConfig", "GPTNeoModel",
                dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=32,
                     attention_types=[[["global", "local"], 1]], window_size=4), "text"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXModel", TEXT, "text"),
    "gptj": ("GPTJConfig", "GPTJModel",
             dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32, rotary_dim=8), "text"),
    "opt": ("OPTConfig", "OPTModel",
            dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                 max_position_embeddings=32, word_embed_proj_dim=32), "text"),
    "bloom": ("BloomConfig", "BloomModel", dict(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=2), "text"),
    "falcon": ("FalconConfig", "FalconModel",
               dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2), "text"),
    "llama": ("LlamaConfig", "LlamaModel", DECODER, "text"),
    "mistral": ("MistralConfig", "MistralModel", DECODER, "text"),
    "qwen2": ("Qwen2Config", "Qwen2Model", DECODER, "text"),
    "phi": ("PhiConfig", "PhiModel", dict(DECODER, num_key_value_heads=4), "text"),
    "gemma": ("GemmaConfig", "GemmaModel", dict(DECODER, head_dim=8), "text"),
    "t5": ("T5Config", "T5Model",
           dict(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0),
           "text2text"),
    "bart": ("BartConfig", "BartModel",
             dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32),
             "text2text"),
}


def _monai_models() -> dict[str, tuple[str, dict, tuple[int, ...]]]:
    """MONAI network -> (class name in ``monai.networks.nets``, constructor arguments, input shape)."""
    img = (1, 1, IMG, IMG)
    d2 = dict(spatial_dims=2)
    vit = dict(in_channels=1, img_size=IMG, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2, **d2)
    return {
        "DenseNet": ("DenseNet", dict(d2, in_channels=1, out_channels=10, init_features=8, growth_rate=4,
                                      block_config=(2, 2)), img),
        "ResNet (basic)": ("ResNet", dict(d2, block="basic", layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64],
                                          n_input_channels=1, num_classes=10), img),
        "ResNet (bottleneck)": ("ResNet", dict(d2, block="bottleneck", layers=[1, 1, 1, 1],
                                               block_inplanes=[8, 16, 32, 64], n_input_channels=1, num_classes=10),
                                img),
        "ResNet (3-D)": ("ResNet", dict(spatial_dims=3, block="basic", layers=[1, 1, 1, 1],
                                        block_inplanes=[4, 8, 16, 32], n_input_channels=1, num_classes=10),
                         (1, 1, 16, 16, 16)),
        "SEResNet50": ("SEResNet50", dict(d2, in_channels=1, num_classes=10, layers=(1, 1, 1, 1)), img),
        "SENet154": ("SENet154", dict(d2, in_channels=1, num_classes=10, layers=(1, 1, 1, 1)), img),
        "EfficientNetBN": ("EfficientNetBN", dict(d2, model_name="efficientnet-b0", in_channels=1, num_classes=10,
                                                  pretrained=False), img),
        "UNet": ("UNet", dict(d2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                              num_res_units=1), img),
        "BasicUNet": ("BasicUNet", dict(d2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)), img),
        "AttentionUnet": ("AttentionUnet", dict(d2, in_channels=1, out_channels=2, channels=(4, 8, 16),
                                                strides=(2, 2)), img),
        "SegResNet": ("SegResNet", dict(d2, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1),
                                        blocks_up=(1,)), img),
        "DynUNet": ("DynUNet", dict(d2, in_channels=1, out_channels=2, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                                    upsample_kernel_size=[2, 2], filters=[4, 8, 16]), img),
        "FlexibleUNet": ("FlexibleUNet", dict(d2, in_channels=1, out_channels=2, backbone="efficientnet-b0",
                                              pretrained=False), img),
        "HighResNet": ("HighResNet", dict(d2, in_channels=1, out_channels=2), img),
        "ViT": ("ViT", dict(vit, patch_size=8, classification=True, num_classes=10), img),
        "ViTAutoEnc": ("ViTAutoEnc", dict(vit, patch_size=4), img),
        "UNETR": ("UNETR", dict(in_channels=1, out_channels=2, img_size=IMG, feature_size=4, hidden_size=32,
                                mlp_dim=64, num_heads=2, **d2), img),
        "SwinUNETR": ("SwinUNETR", dict(d2, in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1),
                                        num_heads=(1, 1, 1, 1)), (1, 1, 64, 64)),
        "Classifier": ("Classifier", dict(in_shape=(1, IMG, IMG), classes=10, channels=(4, 8), strides=(2, 2)), img),
        "Regressor": ("Regressor", dict(in_shape=(1, IMG, IMG), out_shape=(1,), channels=(4, 8), strides=(2, 2)),
                      img),
        "AutoEncoder": ("AutoEncoder", dict(d2, in_channels=1, out_channels=1, channels=(4, 8), strides=(2, 2)),
                        img),
        "VarAutoEncoder": ("VarAutoEncoder", dict(d2, in_shape=(1, IMG, IMG), out_channels=1, latent_size=4,
                                                  channels=(4, 8), strides=(2, 2)), img),
        "Generator": ("Generator", dict(latent_shape=(8,), start_shape=(4, 8, 8), channels=(4, 1), strides=(2, 2)),
                      (1, 8)),
        "FullyConnectedNet": ("FullyConnectedNet", dict(in_channels=16, out_channels=4, hidden_channels=(8, 8)),
                              (1, 16)),
    }


#: corpus -> (name of the results file, what it is)
CORPORA = {"transformers": ("coverage", "Hugging Face transformers architectures"),
           "monai": ("coverage_monai", "MONAI networks (monai.networks.nets)")}


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    def handler(signum, frame):
        raise _Timeout(f"over {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def build(name: str, seed: int, corpus: str = "transformers") -> tuple[torch.nn.Module, Any]:
    """The model ``name`` of ``corpus`` from its tiny config (random init with ``seed``) and its input."""
    gen = torch.Generator().manual_seed(0)
    if corpus == "monai":
        import monai.networks.nets as nets

        cls, kwargs, shape = _monai_models()[name]
        torch.manual_seed(seed)
        return getattr(nets, cls)(**kwargs).eval(), torch.randn(*shape, generator=gen)
    import transformers

    cfg_cls, model_cls, kwargs, kind = MODELS[name]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_cls)(**kwargs)
    model = getattr(transformers, model_cls)(cfg).eval()
    if kind == "image":
        return model, torch.randn(1, 3, IMG, IMG, generator=gen)
    ids = torch.randint(1, VOCAB, (1, SEQ), generator=gen)
    if kind == "text2text":
        return model, {"input_ids": ids, "decoder_input_ids": ids[:, : SEQ // 2]}
    return model, ids


def _tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor of a model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _run(model: torch.nn.Module, x: Any) -> list[torch.Tensor]:
    with torch.no_grad():
        return _tensors(model(**x) if isinstance(x, dict) else model(x))


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().contiguous().reshape(-1), b.detach().contiguous().reshape(-1)
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.dtype != torch.bool else torch.equal(a, b)


def check(name: str, timeout: float, corpus: str = "transformers") -> dict:
    """Convert one model and classify the result."""
    import weightspace as ws

    try:
        model, x = build(name, 0, corpus)
        fresh, _ = build(name, 1, corpus)
        _run(model, x)
    except Exception as exc:  # noqa: BLE001 - the installed version rejects the tiny config (or cannot run it)
        return {"status": "build failed", "message": f"{type(exc).__name__}: {exc}"}
    sd = model.state_dict()
    unique = {id(t): t for t in model.state_dict(keep_vars=True).values()}
    res: dict = {"params": sum(t.numel() for t in unique.values() if t.is_floating_point()),
                 "param_bytes": sum(t.numel() * t.element_size() for t in unique.values() if t.is_floating_point())}
    t0 = time.perf_counter()
    try:
        with _time_limit(timeout):
            spec = ws.GraphSpec.from_module(model, x)
            g = spec.to_graph(sd)
            res["convert_s"] = time.perf_counter() - t0
            res.update(nodes=g.num_nodes, edges=g.num_edges,
                       graph_bytes=storage_bytes([v for _, v in g if isinstance(v, torch.Tensor)]))
            back = spec.to_state_dict(g)
            bad = [k for k in sd if k not in back or not _bits_equal(back[k], sd[k])]
            if bad:
                return {**res, "status": "wrong", "message": f"round trip differs at {bad[0]!r}"}
            expected = _run(model, x)
            ws.from_graph(g, fresh, example_input=x)
            got = _run(fresh, x)
            if len(got) != len(expected) or not all(_bits_equal(a, b) for a, b in zip(got, expected)):
                return {**res, "status": "wrong", "message": "outputs differ after from_graph into a fresh copy"}
            return {**res, "status": "converted"}
    except ws.UnsupportedModuleError as exc:
        return {**res, "status": "refused", "message": str(exc).splitlines()[0][:400],
                "seconds_to_refusal": time.perf_counter() - t0}
    except _Timeout as exc:
        return {**res, "status": "wrong", "message": f"timeout: {exc}"}
    except Exception as exc:  # noqa: BLE001 - anything else is a converter bug
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**res, "status": "wrong",
                "message": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]} "
                           f"({Path(where.filename).name}:{where.lineno})"}


def markdown(res: dict) -> str:
    rows = res["results"]
    counted = {k: r for k, r in rows.items() if r["status"] in ("converted", "refused", "wrong")}
    n = {s: sum(r["status"] == s for r in counted.values()) for s in ("converted", "refused", "wrong")}
    corpus = res.get("corpus", "transformers")
    lines = [
        f"# Converter coverage of {CORPORA[corpus][1]}",
        "",
        f"Command: `{res['command']}`; date {res['date']}; machine {res['machine']}; load average (1, 5, 15 min) "
        f"at the start {res['load_avg_start']}, at the end {res['load_avg_end']}; torch {res['torch']}, "
        f"{corpus} {res.get(corpus, res.get('transformers'))}; time limit {res['timeout_s']:.0f} s per model; total "
        f"{res['total_s']:.0f} s.",
        "",
        f"**Coverage: {n['converted']} / {len(counted)} converted ({100 * n['converted'] / max(len(counted), 1):.0f} %)**, "
        f"{n['refused']} refused with a named module and operation, {n['wrong']} wrong.",
        "",
        "Converted = bit-exact `decode(encode)` of every state-dict entry and bit-identical outputs of a fresh "
        "copy (another seed) after `from_graph`; refused = `UnsupportedModuleError`; wrong = anything else. "
        + ("Models are base models from tiny configs (random init): hidden size 16-32, 1-2 layers per stage, "
           f"{IMG}x{IMG} images or {SEQ} tokens." if corpus == "transformers" else
           f"Networks are built 2-D (`spatial_dims=2`) with a few channels per stage on 1x{IMG}x{IMG} inputs "
           "(SwinUNETR 64x64), random init, in eval mode; one 3-D ResNet shows how volumes are handled."),
        "",
        "| model type | status | parameters | nodes | edges | conversion | graph bytes / param bytes | message |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ratio = f"{r['graph_bytes'] / r['param_bytes']:.2f}" if "graph_bytes" in r and r.get("param_bytes") else ""
        secs = f"{r['convert_s']:.2f} s" if "convert_s" in r else (
            f"({r['seconds_to_refusal']:.2f} s to refusal)" if "seconds_to_refusal" in r else "")
        msg = r.get("message", "").replace("|", "\\|")
        lines.append(f"| {name} | {r['status']} | {r.get('params', ''):,} | {r.get('nodes', '')} | {r.get('edges', '')} "
                     f"| {secs} | {ratio} | {msg} |" if "params" in r else f"| {name} | {r['status']} | | | | | | {msg} |")
    lines += ["", "Conversion = `GraphSpec.from_module(model, example_input)` + "
              "`spec.to_graph(state_dict)`. Graph bytes count every tensor the `ParameterGraph` "
              "stores once (edge weights at each edge's own kernel size, `edge_values`); parameter bytes the floating-point state-dict tensors "
              "(tied ones once).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="transformers",
                    help="which library's architectures (the library must be installed: the dev extra has both)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per model")
    ap.add_argument("--only", default="", help="comma-separated model types (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import importlib

    import weightspace  # noqa: F401 - imported before timing

    lib = importlib.import_module(args.corpus)
    catalogue = MODELS if args.corpus == "transformers" else _monai_models()
    names = [n for n in args.only.split(",") if n] or list(catalogue)
    load0 = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    t0 = time.perf_counter()
    results = {}
    for name in names:
        if args.corpus == "transformers" and not all(hasattr(lib, c) for c in MODELS[name][:2]):
            results[name] = {"status": "not installed"}
            continue
        results[name] = check(name, args.timeout, args.corpus)
        print(f"{name:14s} {results[name]['status']:10s} {results[name].get('message', '')[:120]}", flush=True)
    res = {
        "command": "python benchmarks/coverage.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} cores (nproc), "
                   f"{args.threads} torch thread(s)",
        "load_avg_start": load0, "load_avg_end": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "corpus": args.corpus, "torch": torch.__version__, args.corpus: lib.__version__, "timeout_s": args.timeout,
        "total_s": time.perf_counter() - t0, "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = CORPORA[args.corpus][0]
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
