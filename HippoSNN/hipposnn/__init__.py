"""HippoSNN: spiking U-Net segmentation of the human hippocampus from T1 MRI.

The core package is plain PyTorch + NumPy and never imports Slicer, Qt or CTK, so that the same code
serves the 3D Slicer module, the command line, batch scripts and teaching notebooks.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import Cancelled, HippoSNNError

# the input spike coding of the shipped default models: ternary spikes beat binary ones in the
# cross-validation of every stage (docs/models.md), so the CLI, the Slicer module and training default to it
DEFAULT_CODING = "ternary"

__all__ = ["DEFAULT_CODING", "Cancelled", "HippoSNNError", "__version__"]
