"""A sliver of real FER2013 PrivateTest for fereval's tests: shapes and bookkeeping, not quality."""

from __future__ import annotations

import pytest

from fermodels.data import load_split


@pytest.fixture(scope="module")
def faces():
    return load_split("test", limit=50)
