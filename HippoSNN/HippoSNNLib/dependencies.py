"""Installing and checking what the core needs inside Slicer: torch (PyTorch extension) and nibabel.

Nothing here runs at start-up: the logic calls :func:`ensureTorch` on the first action that needs
torch, and :func:`ensurePythonRequirements` before anything that reads image files (template
registration, training data). Slicer 5.8 ships numpy, SimpleITK and vtk but neither torch nor nibabel.
"""

from __future__ import annotations

import importlib.util
from typing import List, Tuple

import slicer
from slicer.i18n import tr as _

#: Oldest torch the core is tested with (pyproject: torch>=2.2).
MINIMUM_TORCH_VERSION = "2.2"
#: Packages the core needs besides torch and what Slicer ships (numpy, SimpleITK, vtk); lower bounds only.
PYTHON_REQUIREMENTS: List[str] = ["nibabel>=4.0"]


def versionTuple(version: str) -> Tuple[int, ...]:
    """(major, minor) of a version string such as '2.5.1+cu121'."""
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def ensureTorch(interactive: bool) -> None:
    """Make torch importable through the PyTorch extension and check its version.

    :param interactive: let PyTorchUtils ask before installing (console/batch callers: no dialogs).
    :raises RuntimeError: saying what to install when torch is missing, declined or too old.
    """
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(
            _(
                "HippoSNN needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager, "
                "restart Slicer and try again."
            )
        ) from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(
            askConfirmation=interactive, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}"
        )
        if torch is None:
            raise RuntimeError(_("PyTorch is required: install it from the PyTorch module, then try again."))
    import torch

    if versionTuple(torch.__version__) < versionTuple(MINIMUM_TORCH_VERSION):
        raise RuntimeError(
            _(
                "PyTorch {found} is too old; HippoSNN needs {required} or later. Open the PyTorch module, "
                "uninstall torch, install it again, and restart Slicer."
            ).format(found=torch.__version__, required=MINIMUM_TORCH_VERSION)
        )


def missingRequirements() -> List[str]:
    """The entries of :data:`PYTHON_REQUIREMENTS` whose package cannot be imported (no import is done)."""
    return [req for req in PYTHON_REQUIREMENTS if importlib.util.find_spec(req.split(">")[0].split("=")[0]) is None]


def ensurePythonRequirements(interactive: bool) -> None:
    """Install the missing packages of :data:`PYTHON_REQUIREMENTS`, asking first only when ``interactive``.

    Slicer >= 5.11 offers ``slicer.packaging.pip_ensure`` (asks, installs with progress, offers a
    restart); older Slicer gets ``slicer.util.pip_install`` after a confirmation.
    :raises RuntimeError: if the user declines.
    """
    missing = missingRequirements()
    if not missing:
        return
    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(missing, requester="HippoSNN", prompt_install=interactive, prompt_restart=interactive)
        return
    if interactive and not slicer.util.confirmOkCancelDisplay(
        _("HippoSNN needs these Python packages: {packages}. Install them now?").format(packages=", ".join(missing))
    ):
        raise RuntimeError(_("Required Python packages are missing: {packages}").format(packages=", ".join(missing)))
    for requirement in missing:
        slicer.util.pip_install(requirement)
