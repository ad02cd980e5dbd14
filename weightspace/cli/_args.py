"""Command-line argument helpers shared by the verbs."""

from __future__ import annotations


def first_positional_as(key: str, argv: list[str]) -> list[str]:
    """Turn the first bare word of ``argv`` into the override ``key=word``; keep everything else.

    ``first_positional_as("zoo", ["digits_cnn", "size=10"])`` -> ``["zoo=digits_cnn", "size=10"]``.
    """
    out, named = [], False
    for a in argv:
        if not named and "=" not in a and not a.startswith("-"):
            out.append(f"{key}={a}")
            named = True
        else:
            out.append(a)
    return out
