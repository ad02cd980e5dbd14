"""``weightspace --help`` and ``weightspace <verb> --help``: purpose, options with defaults, examples."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from weightspace.cli.main import config_dir, main, verbs


def test_top_level_help_lists_every_verb(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for verb, line in verbs().items():
        assert f"  {verb}" in out and line.split(":")[0] in out


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_verb_help_shows_purpose_options_and_defaults(verb, capsys):
    main([verb, "--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"weightspace {verb}: ")
    doc = yaml.safe_load((config_dir() / f"{verb}.yaml").read_text())
    shown = [k for k, v in doc.items() if k not in ("defaults", "hydra") and not isinstance(v, dict)]
    assert shown, f"{verb}.yaml has no top-level options"
    for key in shown:
        assert f"  {key}=" in out, f"option {key} missing from `weightspace {verb} --help`"
    assert "--hydra-help" in out


def test_verb_help_prints_examples_and_schema_fields(capsys):
    main(["zoo", "--help"])
    out = capsys.readouterr().out
    assert "examples:\n  weightspace zoo digits_mlp_demo" in out
    assert "usage: weightspace zoo <name>" in out
    main(["nowcast", "--help"])
    assert "model.<field>=VALUE" in capsys.readouterr().out


def test_help_loads_no_torch():
    """Help must print at once: it reads sources and YAML, it imports neither torch nor Hydra."""
    code = ("import sys; from weightspace.cli.main import main; main(['zoo', '--help']); "
            "print('LOADED', sorted(m for m in ('torch', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out, out[-500:]
