"""weightspace.hyper.family: the architecture space and its held-out splits."""

from __future__ import annotations

import numpy as np
import pytest

from weightspace.hyper import SPLITS, ArchSpace, config_key, is_held_out
from weightspace.instantiate import instantiate


def test_splits_are_distinct_and_held_out():
    space = ArchSpace()
    rng = np.random.default_rng(0)
    train = {config_key(space.sample_train(rng)) for _ in range(300)}
    unseen = space.split("unseen", 20)
    assert all(is_held_out(c) for c in unseen)
    assert not train & {config_key(c) for c in unseen}
    for s in SPLITS:
        cs = space.split(s, 8)
        assert len({config_key(c) for c in cs}) == 8
        assert all(instantiate(c) is not None for c in cs[:2])
    with pytest.raises(ValueError, match="unknown split"):
        space.split("dense", 2)
