"""Stand-in for the PyTorch extension's ``PyTorchUtils`` module: torch is already installed here."""

from __future__ import annotations

import slicer


class PyTorchUtilsLogic:
    @staticmethod
    def torchInstalled() -> bool:
        slicer.standinCalls.append(("PyTorchUtilsLogic.torchInstalled",))
        return True

    def installTorch(
        self,
        askConfirmation=False,
        forceComputationBackend=None,
        torchVersionRequirement=None,
        torchvisionVersionRequirement=None,
    ):
        slicer.standinCalls.append(("PyTorchUtilsLogic.installTorch", askConfirmation, torchVersionRequirement))
        import torch

        return torch
