"""``weightspace nowcast``: the config composes, and a tiny run makes zoos, meta-trains, writes the
checkpoint and the report, and resumes."""

from __future__ import annotations

import json

from weightspace.cli.main import main
from weightspace.nowcast import Nowcaster

TINY = ["zoos.{z}.size=2", "zoos.{z}.space.batch_size=360", "zoos.{z}.trainer.epochs=2",
        "zoos.{z}.trainer.checkpoints=[0,2]", "zoos.{z}.trainer.dense_every=1"]


def test_nowcast_cli_tiny_run_and_resume(tmp_path):
    args = ["nowcast", f"work_dir={tmp_path}", f"out={tmp_path}/ckpt", "progress=false", "model.hidden=8",
            "model.layers=1", "model.horizons=2", "train.steps=4", "train.log_every=2", "train.save_every=2",
            "train.strides=[1]", "train.batch=1", "~zoos.digits_cnn", "~zoos.digits_mlp_depth",
            "~zoos.synthetic_vit", "lm.runs=0", "model.param_hidden=4"]
    args += [a.format(z="digits_mlp") for a in TINY]
    main(args)
    nc = Nowcaster.from_pretrained(tmp_path / "ckpt")  # a save_pretrained directory
    assert nc.kind == "graph" and nc.config.hidden == 8 and nc.config.context == 5  # the rest: dataclass defaults
    assert nc.info["trajectories"] == 2 and nc.info["steps"] == 4
    assert (tmp_path / "graph/meta_train.png").exists()
    rows = (tmp_path / "graph/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [2, 4]
    # rerunning with more steps resumes from step 4
    main([a if not a.startswith("train.steps") else "train.steps=6" for a in args])
    rows = (tmp_path / "graph/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [2, 4, 6]


def test_nowcast_cli_adds_lm_runs_and_a_run_dir(tmp_path):
    """``lm.runs`` adds byte-level LM trajectories to the zoo ones; ``run_dir`` moves the meta-training state."""
    args = ["nowcast", f"work_dir={tmp_path}", f"out={tmp_path}/ckpt", f"run_dir={tmp_path}/mine", "progress=false",
            "report=false", "model.hidden=8", "model.layers=1", "model.horizons=2", "model.param_hidden=4",
            "train.steps=2", "train.log_every=1", "train.save_every=2", "train.strides=[1]", "train.batch=1",
            "~zoos.digits_cnn", "~zoos.digits_mlp_depth", "~zoos.synthetic_vit", "lm.runs=2", "lm.steps=12",
            "lm.every=2", "lm.max_bytes=20000"]
    args += [a.format(z="digits_mlp") for a in TINY]
    main(args)
    nc = Nowcaster.from_pretrained(tmp_path / "ckpt")
    assert nc.info["trajectories"] == 4 and nc.info["lm"]["runs"] == 2  # 2 zoo runs + 2 LM runs
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["lm_0.safetensors", "lm_1.safetensors"]
    assert (tmp_path / "mine" / "last.json").exists() and not (tmp_path / "graph").exists()
