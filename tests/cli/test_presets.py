"""``preset=laptop`` (the default) and ``preset=paper``: what each composes to, verb by verb.

``preset=paper`` is the shipped recipe: every schema-backed node equals its dataclass defaults (and
``predict`` uses the GMN metanetwork); the default ``preset=laptop`` is those defaults updated by
``configs/preset/<verb>/laptop.yaml``, whose values all differ from the defaults.
"""

import dataclasses

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from weightspace.cli.main import config_dir
from weightspace.cli.schemas import register_schemas, schema_class

CONFIGS = config_dir()
PRESET_VERBS = sorted(p.name for p in (CONFIGS / "preset").iterdir() if p.is_dir())


def _compose(verb: str, overrides: list[str] | None = None) -> dict:
    register_schemas()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=verb, overrides=overrides or []), resolve=False)


def _schema_nodes(verb: str) -> dict[str, str]:
    """package -> schema name of the verb's ``schema/<name>@<package>`` defaults entries."""
    doc = yaml.safe_load((CONFIGS / f"{verb}.yaml").read_text())
    out = {}
    for entry in doc.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("schema/"):
            name, _, pkg = entry[len("schema/"):].partition("@")
            out[pkg] = name
    return out


def _defaults(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema_class(name)))


def _laptop(verb: str) -> dict:
    path = CONFIGS / "preset" / verb / "laptop.yaml"
    doc = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return {k: v for k, v in doc.items() if k != "defaults"}


def test_every_verb_with_a_preset_selects_it():
    for verb in PRESET_VERBS:
        text = (CONFIGS / f"{verb}.yaml").read_text()
        assert "- preset: laptop" in text and f"- optional preset/{verb}@_global_: ${{preset}}" in text, verb


@pytest.mark.parametrize("verb", PRESET_VERBS)
def test_paper_preset_is_the_dataclass_defaults(verb):
    cfg = _compose(verb, ["preset=paper"])
    for pkg, name in _schema_nodes(verb).items():
        assert cfg[pkg] == _defaults(name), f"{verb} preset=paper: {pkg} is not the {schema_class(name).__name__} defaults"


@pytest.mark.parametrize("verb", PRESET_VERBS)
def test_default_is_the_laptop_preset(verb):
    cfg = _compose(verb)
    assert cfg == _compose(verb, ["preset=laptop"])
    laptop = _laptop(verb)
    assert set(laptop) <= set(_schema_nodes(verb)), f"preset/{verb}/laptop.yaml sets nodes that are not schema-backed"
    for pkg, name in _schema_nodes(verb).items():
        defaults = _defaults(name)
        changes = laptop.get(pkg, {})
        assert set(changes) <= set(defaults), f"preset/{verb}/laptop.yaml: {sorted(set(changes) - set(defaults))} unknown"
        same = sorted(k for k, v in changes.items() if v == defaults[k])
        assert not same, f"preset/{verb}/laptop.yaml: {same} restate the {schema_class(name).__name__} defaults"
        assert cfg[pkg] == {**defaults, **changes}


def test_predict_presets_pick_the_metanetwork():
    def recipe(option):
        return yaml.safe_load((CONFIGS / "metanet" / f"{option}.yaml").read_text())

    assert _compose("predict")["metanet"] == recipe("probe")
    assert _compose("predict", ["preset=paper"])["metanet"] == recipe("gmn")
    assert _compose("predict", ["preset=paper", "metanet=statnn"])["metanet"] == recipe("statnn")  # the command line wins


def test_command_line_overrides_a_preset_value():
    cfg = _compose("generate", ["preset=paper", "graph.ae_steps=7"])
    assert cfg["graph"]["ae_steps"] == 7 and cfg["graph"]["ddpm_steps"] == _defaults("diffusion_graph")["ddpm_steps"]


def test_laptop_preset_differs_from_paper():
    """Sensitivity of the checks above: the two presets compose to different configs for every verb."""
    for verb in PRESET_VERBS:
        assert _compose(verb) != _compose(verb, ["preset=paper"]), verb


def test_unknown_preset_and_verb_without_presets_are_refused():
    with pytest.raises(ConfigCompositionException, match="preset"):
        _compose("generate", ["preset=desktop"])
    with pytest.raises(ConfigCompositionException, match="preset"):
        _compose("zoo", ["preset=paper"])


def test_dataclasses_are_the_paper_recipe():
    """The schemas the presets compare against are dataclasses (a renamed schema fails here, not silently)."""
    for verb in PRESET_VERBS:
        for name in _schema_nodes(verb).values():
            assert dataclasses.is_dataclass(schema_class(name))


def test_nowcast_presets_pick_the_zoos():
    """preset=laptop builds the four short zoos, preset=paper all seven (the long NiNo-like runs too)."""
    short = {"digits_mlp", "digits_cnn", "digits_mlp_depth", "synthetic_vit"}
    assert set(_compose("nowcast")["zoos"]) == short
    assert set(_compose("nowcast", ["preset=paper"])["zoos"]) == short | {"digits_mlp_long", "digits_cnn_long",
                                                                          "synthetic_vit_long"}
    assert _compose("nowcast")["train"]["steps"] < _compose("nowcast", ["preset=paper"])["train"]["steps"]
