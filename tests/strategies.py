"""Hypothesis strategies shared by the fuzz tests of the file readers."""

from hypothesis import strategies as st

#: any JSON value (nested up to a few levels): what a corrupted or hand-edited file may hold where a
#: reader expects one particular type
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**15), max_value=10**15) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
