"""Why nowcasting jumps hurt language-model training: per-jump evidence on a validation LM task.

The validation task (fixed before any held-out result of this study was read; not held out, so the
hook's defaults may be designed on it): :class:`~weightspace.nowcast.lm.MHALM` (the meta-training
family: post-norm ``nn.MultiheadAttention`` blocks, sinusoidal positions, tied head) of width 64,
4 heads, 2 blocks, sequence 32, trained next-byte on the ``code`` corpus (installed ``.py`` files, the
meta-training corpus) with the held-out task's recipe: AdamW (lr 3e-3, weight decay 0.1), 50 warm-up
steps, cosine decay to 10% over 600 steps, batch 16. The held-out ``lm_gpt`` task of
``benchmarks/nowcast.py`` (TinyGPT on package METADATA prose) is never run here.

For every variant and seed the same initialization and batches are used; each jump is logged with the
training loss just before it, on the jumped weights, and the mean over the next 20 steps against the
mean over the 20 steps before it, the learning-rate factor at the jump, the horizon and steps ahead,
and the share of the jump's change per parameter role (embedding, attention in/out, MLP, LayerNorm).

    python benchmarks/nowcast_lm_diagnose.py --seeds 3 --variants adamw,default,...   # -> runs/nowcast_diag/
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from weightspace.nowcast import Nowcaster  # noqa: E402
from weightspace.nowcast.lm import MHALM, example_input, lm_batch, lm_loss, text_corpus  # noqa: E402

log = logging.getLogger("benchmarks.nowcast_lm_diagnose")

STEPS, WARMUP, LR, WD, BATCH, SEQ = 600, 50, 3e-3, 0.1, 16, 32
VAL_WINDOWS, EVAL_EVERY, AROUND = 64, 20, 20


def lr_factor(step: int) -> float:
    if step < WARMUP:
        return (step + 1) / WARMUP
    frac = (step - WARMUP) / max(1, STEPS - WARMUP)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac)))


def role(name: str) -> str:
    if name.startswith("tok"):
        return "embedding/head"
    if "in_proj" in name:
        return "attn_in(qkv)"
    if "out_proj" in name:
        return "attn_out"
    if ".ln" in name:
        return "layernorm"
    return "mlp"


def run(variant: str, nc, seed: int, corpus, val) -> dict:
    torch.manual_seed(seed)
    model = MHALM(dim=64, heads=4, depth=2, seq=SEQ, mlp_ratio=4)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    kw = dict(VARIANTS[variant]) if variant in VARIANTS else {}
    h = nc.attach(model, opt, total_steps=STEPS, example_input=example_input(SEQ), **kw) if nc is not None else None
    names = h.spec.names if h else []
    gen = torch.Generator().manual_seed(10_000 + seed)
    train, vloss = [], []
    prev = {}
    for step in range(STEPS):
        x, y = lm_batch(corpus.train, BATCH, SEQ, gen)
        model.train()
        loss = lm_loss(model, x, y)
        if h is not None:
            h.report_loss(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if h is not None:
            prev = {n: t.detach().clone() for n, t in model.state_dict().items()}
            before = h.jumps + h.undone + h.skipped
        opt.step()
        if h is not None and h.jumps + h.undone + h.skipped > before and h.history[-1]["applied"]:
            # share of the jump's change (|delta|^2) per role; the step's own update is tiny beside it
            sd = model.state_dict()
            sq = {}
            for n in names:
                sq[role(n)] = sq.get(role(n), 0.0) + float((sd[n] - prev[n]).pow(2).sum())
            tot = sum(sq.values()) or 1.0
            h.history[-1]["role_share"] = {k: v / tot for k, v in sq.items()}
            h.history[-1]["lr_factor"] = lr_factor(step)
        sched.step()
        train.append(float(loss.detach()))
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == STEPS:
            model.eval()
            with torch.no_grad():
                vloss.append((step + 1, float(lm_loss(model, *val))))
    jumps = []
    if h is not None:
        for r in h.history:
            if not r.get("applied"):
                continue
            s = r["step"]  # train[s] is the loss on the jumped weights (step s+1's batch)
            pre = train[max(0, s - AROUND):s]
            post = train[s:s + AROUND]
            jumps.append({"step": s, "horizon": r["horizon"], "steps_ahead": r["steps_ahead"],
                          "lr_factor": r.get("lr_factor"), "undone": r["undone"],
                          "loss_before": train[s - 1], "loss_after": train[s] if s < len(train) else None,
                          "pre_mean": statistics.mean(pre) if pre else None,
                          "post_mean": statistics.mean(post) if post else None,
                          "delta_over_window": (r["delta_norm"] / r["window_norm"]) if r["window_norm"] else None,
                          "role_share": r.get("role_share"), "guard_before": r["loss_before"],
                          "guard_after": r["loss_after"]})
        summ = h.remove()
    else:
        summ = {}
    return {"variant": variant, "seed": seed, "final_val": vloss[-1][1], "val": vloss, "jumps": jumps,
            "summary": {k: summ.get(k) for k in ("jumps", "undone", "steps_ahead", "period")},
            "train_tail": statistics.mean(train[-50:])}


VARIANTS: dict[str, dict] = {
    "default": {},  # the library's defaults (skip_warmup and backoff on)
    "old_default": {"skip_warmup": False, "backoff": False},  # the defaults before the warm-up and backoff rules
    "no_backoff": {"backoff": False},
    "no_skip_warmup": {"skip_warmup": False},
    "fixed_period20": {"period": 20},
    "reset": {"optimizer_state": "reset"},
    "start_after_warmup": {"start": WARMUP},
    "horizon4": {"horizon": 4},
    "horizon8": {"horizon": 8},
    "hold_embed": {"hold": ("attn_q", "attn_k", "attn_v", "rotary_q", "rotary_k", "embedding", "position")},
    "reset_warm": {"optimizer_state": "reset", "start": WARMUP},
    "reset_zero": {"optimizer_state": "reset"},  # control: the moments reset at each "jump" of zero length
    "keep_zero": {},  # control: the hook's bookkeeping alone
}


class ZeroNowcaster(Nowcaster):
    """A control: predicts no change (a jump of length zero), so only the optimizer-state handling acts."""

    def predict(self, spec, window, horizon=None):
        return torch.zeros_like(super().predict(spec, window, horizon))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", default="adamw,default")
    ap.add_argument("--nowcaster", default="nowcaster", help="name or folder")
    ap.add_argument("--kind", default=None, help="linefit: the parameter-free baseline instead")
    ap.add_argument("--out", default=str(ROOT / "runs/nowcast_diag/diag"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("weightspace.nowcast.hook").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    corpus = text_corpus("code")
    val = lm_batch(corpus.val, VAL_WINDOWS, SEQ, torch.Generator().manual_seed(0))
    if args.kind:
        nc = Nowcaster(kind=args.kind)
    elif os.path.isdir(args.nowcaster):
        nc = Nowcaster.load(args.nowcaster)
    else:
        nc = Nowcaster.pretrained(args.nowcaster)
    zero = ZeroNowcaster(kind="linefit")
    out = {"command": "python benchmarks/nowcast_lm_diagnose.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": os.getloadavg(), "runs": []}
    for v in args.variants.split(","):
        for s in range(args.seeds):
            r = run(v, None if v == "adamw" else (zero if v.endswith("_zero") else nc), s, corpus, val)
            out["runs"].append(r)
            log.info("%s seed %d: final val %.4f, %s (load %.1f)", v, s, r["final_val"], r["summary"],
                     os.getloadavg()[0])
    out["load_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))
    for v in args.variants.split(","):
        f = [r["final_val"] for r in out["runs"] if r["variant"] == v]
        print(f"{v:<20} final val {statistics.mean(f):.4f} ± {statistics.stdev(f) if len(f) > 1 else 0:.4f}")


if __name__ == "__main__":
    main()
