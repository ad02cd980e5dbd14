"""`weightspace demo` end to end (a subset of the examples, in a subprocess)."""

import subprocess
import sys


def test_demo_writes_report_and_graph_png(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "weightspace.cli.main", "demo", "examples=[mlp,resnet,vit]", "draw=resnet",
         "progress=false", "zoo.size=10", "zoo.trainer.epochs=2", "zoo.trainer.checkpoints=[0,2]", "predict_epochs=2",
         "nowcast_steps=40", f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| resnet |" in res.stdout and "FAILED" not in res.stdout
    report = (out / "report.md").read_text()
    assert "exact" in report and "graph_resnet.png" in report
    assert "## 2. Model zoo" in report and "10 digits MLPs" in report and "round trip exact" in report
    for section in ("## 3. Predicting accuracy", "## 4. Nowcasting", "## 5. Weights for unseen"):
        assert section in report
    assert (out / "predict_gmn" / "metrics.json").exists() and (out / "nowcast.png").exists()
    assert (out / "predict_probe" / "metrics.json").exists()
    assert (out / "zoo" / "summary.png").exists() and (out / "zoo" / "zoo.json").exists()
    png = (out / "graph_resnet.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_unknown_verb_fails_with_usage():
    res = subprocess.run([sys.executable, "-m", "weightspace.cli.main", "nosuchverb"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown verb 'nosuchverb'" in res.stderr and "demo" in res.stderr
