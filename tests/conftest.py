"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The fused C++ kernels compile in the background by default (hipposnn.native); tests compile them in
# the foreground instead, so that every test process runs the same (fused) path from its first test.
os.environ.setdefault("HIPPOSNN_NATIVE", "wait")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the reference data folder ../shared/data; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (only present in the development checkout)")
    return SHARED_DATA
