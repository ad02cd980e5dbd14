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
        text = (CONFIGS / f"{verb}.yaml").read_text()
        for group_dir in sorted(p for p in CONFIGS.iterdir() if p.is_dir() and p.name not in ("hydra", "local")):
            if f"- {group_dir.name}:" in text or f"- {group_dir.name}@" in text:
                out += [(verb, group_dir.name, opt.stem) for opt in sorted(group_dir.glob("*.yaml"))]
    return out


@pytest.mark.parametrize("verb,group,option", _group_options())
def test_group_option_composes(verb, group, option):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=verb, overrides=[f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)


def test_configs_folder_is_the_repository_one():
    assert CONFIGS == Path(__file__).resolve().parents[2] / "configs"
