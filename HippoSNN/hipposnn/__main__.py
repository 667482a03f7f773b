"""``python -m hipposnn ...``: the ``hipposnn`` command without the installed entry point.

The 3D Slicer module runs conversion and fine-tuning this way, as ``PythonSlicer -m hipposnn`` from
the module's folder, where the core package ships.
"""

from __future__ import annotations

from .cli import entry

entry()
