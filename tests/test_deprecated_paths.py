"""The old ``weightspace.tasks.*`` import paths still work for one release, and say where things moved."""

import importlib
import sys
import warnings

import pytest

OLD = {
    "weightspace.tasks.predict": ("load_predictor", "weightspace.predict"),
    "weightspace.tasks.nowcast": ("Nowcaster", "weightspace.nowcast"),
    "weightspace.tasks.nowcast_hook": ("NowcastHook", "weightspace.nowcast"),
    "weightspace.tasks.hyper": ("GraphHyperNetwork", "weightspace.hyper"),
    "weightspace.tasks.diffusion": ("WeightDiffusion", "weightspace.diffusion"),
}


@pytest.mark.parametrize("old", sorted(OLD))
def test_old_path_warns_and_reexports(old):
    name, new = OLD[old]
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), \
        [str(w.message) for w in caught]
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)
