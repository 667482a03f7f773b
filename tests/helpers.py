"""Synthetic MSD-layout data for tests (the package's own generator, shared with the smoke experiments)."""

from __future__ import annotations

from hipposnn.synthetic import write_synthetic_msd as make_msd_folder

__all__ = ["make_msd_folder"]
