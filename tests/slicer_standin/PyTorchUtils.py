"""Stand-in for the PyTorch extension's ``PyTorchUtils`` module (tests only).

``PyTorchUtilsLogic.installed`` says whether torch counts as installed (``torchInstalled()``); when it
is False, ``installTorch`` returns ``installResult`` ("torch": the real torch of this machine, None: the
user declined), as the extension does.
"""

from __future__ import annotations

import slicer


class PyTorchUtilsLogic:
    installed = True
    installResult = "torch"

    @staticmethod
    def torchInstalled() -> bool:
        slicer.standinCalls.append(("PyTorchUtilsLogic.torchInstalled",))
        return PyTorchUtilsLogic.installed

    def installTorch(
        self,
        askConfirmation=False,
        forceComputationBackend=None,
        torchVersionRequirement=None,
        torchvisionVersionRequirement=None,
    ):
        slicer.standinCalls.append(("PyTorchUtilsLogic.installTorch", askConfirmation, torchVersionRequirement))
        if PyTorchUtilsLogic.installResult is None:
            return None
        import torch

        return torch
