"""The one exception type for mistakes a user can make.

The CLI prints its message on one line and exits non-zero; the Slicer module shows it in an error
dialog. Programming errors stay ordinary exceptions so that their tracebacks reach developers.
"""

from __future__ import annotations


class HippoSNNError(Exception):
    """A problem with the user's input, files or settings, explained in plain words."""


class Cancelled(HippoSNNError):
    """Raised when a progress callback asked to stop long work."""
