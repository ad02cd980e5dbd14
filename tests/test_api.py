"""The public top-level API: every name in `weightspace.__all__` resolves."""

import pytest

import weightspace as ws


@pytest.mark.parametrize("name", ws.__all__)
def test_public_name_resolves(name):
    assert getattr(ws, name) is not None


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        ws.no_such_thing  # noqa: B018
