"""Every verb's Hydra config, and every option of every config group, composes."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from weightspace.cli.main import config_dir, verbs

CONFIGS = config_dir()
TOP = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def test_every_verb_has_a_config_and_every_config_a_verb():
    assert set(verbs()) <= set(TOP), f"verbs without a config: {set(verbs()) - set(TOP)}"
    assert set(TOP) <= set(verbs()), f"configs without a verb: {set(TOP) - set(verbs())}"


@pytest.mark.parametrize("name", TOP)
def test_verb_config_composes_and_resolves(name):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=name)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def _group_options() -> list[tuple[str, str, str]]:
    out = []
    for verb in TOP:
        # a verb's preset files choose groups for it too (preset/predict/*.yaml: `- /metanet@metanet: ...`)
        text = "\n".join(p.read_text() for p in [CONFIGS / f"{verb}.yaml", *sorted((CONFIGS / "preset" / verb).glob("*.yaml"))])
        for group_dir in sorted(p for p in CONFIGS.iterdir() if p.is_dir() and p.name not in ("hydra", "local")):
            if any(f"- {pre}{group_dir.name}{sep}" in text for pre in ("", "/") for sep in (":", "@")):
                out += [(verb, group_dir.name, opt.stem) for opt in sorted(group_dir.glob("*.yaml"))]
    return out


@pytest.mark.parametrize("verb,group,option", _group_options())
def test_group_option_composes(verb, group, option):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=verb, overrides=[f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)


def test_configs_folder_is_the_repository_one():
    assert CONFIGS == Path(__file__).resolve().parents[2] / "configs"


def _schema_uses() -> list[tuple[str, str, str]]:
    """``(yaml file, schema name, package)`` of every ``schema/<name>@<package>`` defaults entry."""
    import yaml

    out = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for entry in doc.get("defaults", []) or []:
            if isinstance(entry, str) and entry.lstrip("/").startswith("schema/"):
                name, _, pkg = entry.lstrip("/")[len("schema/"):].partition("@")
                out.append((str(path.relative_to(CONFIGS)), name, pkg or "_here_"))
    return out


def test_schemas_are_used():
    from weightspace.cli.schemas import SCHEMAS

    used = {name for _, name, _ in _schema_uses()}
    assert set(SCHEMAS) <= used, f"schemas no YAML builds on: {set(SCHEMAS) - used}"


def _problems(cls, node: dict) -> tuple[list[str], list[str]]:
    """``(unknown keys, keys restating a default)`` of a YAML node built on the dataclass ``cls``."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(node) - set(fields))
    defaults = {k: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for k, f in fields.items()
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}

    def plain(v):
        return OmegaConf.to_container(OmegaConf.create({"v": v}))["v"]

    same = sorted(k for k, v in node.items() if k in defaults and plain(v) == plain(defaults[k]))
    return unknown, same


@pytest.mark.parametrize("path,name,package", _schema_uses())
def test_yaml_holds_only_what_differs_from_its_dataclass(path, name, package):
    """A YAML node built on a config dataclass names only fields of it, and never restates a default
    (a restated default is how YAML and dataclass drift apart)."""
    import yaml

    from weightspace.cli.schemas import schema_class

    cls = schema_class(name)
    node = yaml.safe_load((CONFIGS / path).read_text()) or {}
    for part in ([] if package == "_here_" else package.split(".")):
        node = (node or {}).get(part, {})
    node = {k: v for k, v in (node or {}).items() if k != "defaults"}
    unknown, same = _problems(cls, node)
    assert not unknown, f"{path}: {unknown} are not fields of {cls.__name__}"
    assert not same, f"{path}: {same} restate the defaults of {cls.__name__}; remove them from the YAML"


def test_restated_default_and_unknown_key_are_detected():
    """Sensitivity of the check above, on TrainerConfig (epochs defaults to 20, betas to (0.9, 0.999))."""
    from model_zoo.trainer import TrainerConfig

    assert _problems(TrainerConfig, {"epochs": 20, "betas": [0.9, 0.999], "epochz": 1}) == (["epochz"], ["betas", "epochs"])
    assert _problems(TrainerConfig, {"epochs": 21, "dense_every": 4}) == ([], [])


def test_unknown_override_names_valid_keys():
    from hydra.errors import ConfigCompositionException

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose(config_name="zoo", overrides=["zoo.trainer.epochz=3"])
        cfg = compose(config_name="zoo", overrides=["zoo.trainer.epochs=3"])
    assert cfg.zoo.trainer.epochs == 3 and cfg.zoo.trainer.eval_batch_size == 512


def test_predict_yaml_agrees_with_predict_config():
    """``predict.yaml`` is not built on a schema (``PredictConfig.train_checkpoints`` is a union Hydra
    cannot type); its keys that are ``PredictConfig`` fields must carry the dataclass defaults."""
    import dataclasses

    import yaml

    from weightspace.predict import PredictConfig

    doc = yaml.safe_load((CONFIGS / "predict.yaml").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(PredictConfig) if f.default is not dataclasses.MISSING}
    drift = {k: (doc[k], defaults[k]) for k in doc if k in defaults
             and OmegaConf.to_container(OmegaConf.create({"v": doc[k]}))["v"]
             != OmegaConf.to_container(OmegaConf.create({"v": defaults[k]}))["v"]}
    assert not drift, f"predict.yaml disagrees with PredictConfig (yaml, dataclass): {drift}"


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIGS / "metanet").glob("*.yaml")))
def test_metanet_yaml_names_constructor_arguments(option):
    """Every ``model`` key of a metanet recipe is a constructor argument of the metanetwork it names."""
    import inspect

    import yaml

    from weightspace.predict import METANETS

    doc = yaml.safe_load((CONFIGS / "metanet" / f"{option}.yaml").read_text())
    if doc["name"] not in METANETS:  # statnn_gbm: a scikit-learn model, its arguments checked by it
        return
    params = set(inspect.signature(METANETS.resolve(doc["name"])).parameters)
    extra = {"stats", "kernel_grid", "max_tensors", "stat_tensors", "archs", "input_shape", "in_dim"}  # filled from the zoo
    unknown = sorted(set(doc.get("model") or {}) - params - extra)
    assert not unknown, f"metanet/{option}.yaml: {unknown} are not arguments of {METANETS.resolve(doc['name']).__name__}"
