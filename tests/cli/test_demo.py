"""`weightspace demo` end to end (a subset of the examples, in a subprocess)."""

import subprocess
import sys


def test_demo_writes_report_and_graph_png(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "weightspace.cli.main", "demo", "examples=[mlp,resnet,vit]", "draw=resnet",
         "progress=false", "zoo.size=8", "zoo.trainer.epochs=2", "zoo.trainer.checkpoints=[0,2]", f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| resnet |" in res.stdout and "FAILED" not in res.stdout
    report = (out / "report.md").read_text()
    assert "exact" in report and "graph_resnet.png" in report
    assert "## 2. Model zoo" in report and "8 digits MLPs" in report and "round trip exact" in report
    assert (out / "zoo" / "summary.png").exists() and (out / "zoo" / "zoo.json").exists()
    png = (out / "graph_resnet.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_unknown_verb_fails_with_usage():
    res = subprocess.run([sys.executable, "-m", "weightspace.cli.main", "nosuchverb"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown verb 'nosuchverb'" in res.stderr and "demo" in res.stderr
