"""Optional fused C++ kernels for the IF neurons, compiled in the background; pure PyTorch meanwhile.

The kernels (``csrc/if_kernels.cpp``) compute exactly what :mod:`hipposnn.neurons` computes in
Python, with about a third of the memory traffic, which is what limits IF layers on a CPU. They are
compiled with ``torch.utils.cpp_extension`` once per source/torch/Python version (one to two minutes,
~1.5 GB of memory) into a cache folder, ``$HIPPOSNN_CACHE`` or ``~/.cache/hipposnn``.

The compile is only an optimisation, so no result waits for it: the first process that needs the
kernels starts the compile in a separate background process, says so in one log line, and runs on
the pure-PyTorch path, which gives the same spikes (``tests/test_neurons.py``,
``tests/test_inference.py``). Later processes find the compiled module and load it in well under a
second. ``HIPPOSNN_NATIVE`` chooses the behaviour:

* unset or ``1``: as above (background compile, PyTorch path until it is ready);
* ``wait``: compile in the foreground when needed (benchmarks, tests), then use the kernels;
* ``0``: never use the kernels.

Without a C++ compiler and ninja (e.g. a stock Windows install of 3D Slicer) the compile fails once,
that is remembered in the cache folder (``failed``, with the reason in ``build.log``; also when the
background compile was killed), and every run uses the PyTorch path; ``HIPPOSNN_NATIVE=wait`` tries
again in the foreground. A process decides once whether it uses the kernels, so a run never switches
paths halfway.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from torch import Tensor

_lock = threading.Lock()
_module: Any = None
_tried = False
log = logging.getLogger(__name__)

NAME = "hipposnn_if_kernels"
LIB_EXT = ".pyd" if sys.platform == "win32" else ".so"  # what torch.utils.cpp_extension names the module
SOURCE = Path(__file__).resolve().parent / "csrc" / "if_kernels.cpp"
CFLAGS = ["-O3", "-march=native", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
READY, FAILED, BUILDING = "ready", "failed", "building"


def build_dir() -> Path:
    """The cache folder of the compiled module for this source, torch, Python and machine."""
    import torch

    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    for part in (torch.__version__, sys.version, platform.machine(), " ".join(CFLAGS + LDFLAGS)):
        key.update(part.encode())
    cache = os.environ.get("HIPPOSNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hipposnn")
    return Path(cache) / f"if_kernels-{key.hexdigest()[:16]}"


def _load(folder: Path) -> Any:
    from torch.utils.cpp_extension import load

    return load(name=NAME, sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=LDFLAGS,
                build_directory=str(folder), verbose=False)


def _import_built(folder: Path) -> Any:
    """The module compiled in ``folder``, imported directly; through ``cpp_extension.load`` if that fails.

    Why: ``load`` re-runs ninja to check the build on every run, and the folder's name already pins the
    source, torch, Python and flags it was compiled for.
    """
    import importlib.util

    try:
        spec = importlib.util.spec_from_file_location(NAME, folder / f"{NAME}{LIB_EXT}")
        if spec is None or spec.loader is None:
            raise ImportError(f"no loader for {folder / (NAME + LIB_EXT)}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except (ImportError, OSError):
        return _load(folder)


def build(folder: Optional[Path] = None) -> Any:
    """Compile (or load the already compiled) kernels in this process; mark the folder ready or failed.

    While it compiles, ``building`` holds this process's id. When no live process is compiling, a
    ``lock`` file left by a killed compile is removed first (torch would wait for it forever).
    """
    folder = folder or build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    mine = not _building(folder, other_than=os.getpid())
    if mine:
        (folder / BUILDING).write_text(f"{os.getpid()}\n", encoding="utf-8")
        try:
            (folder / "lock").unlink()
        except OSError:
            pass
    try:
        module = _load(folder)  # with another live compile, torch waits for it and then loads its result
    except Exception as exc:  # no compiler, no ninja, unsupported platform
        (folder / FAILED).write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
        raise
    finally:
        if mine and not _building(folder, other_than=os.getpid()):
            try:
                (folder / BUILDING).unlink()
            except OSError:
                pass
    (folder / READY).write_text("ok\n", encoding="utf-8")
    try:
        (folder / FAILED).unlink()
    except OSError:
        pass
    return module


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _building(folder: Path, other_than: int = -1) -> bool:
    """Whether a compile (by a process other than ``other_than``) is running in ``folder``."""
    try:
        pid = int((folder / BUILDING).read_text().strip())
    except (OSError, ValueError):
        return False
    return pid != other_than and _pid_alive(pid)


def _interpreter() -> Optional[str]:
    """A Python interpreter to run the compile: this one, or Slicer's ``PythonSlicer`` next to the app."""
    if not sys.executable:
        return None
    here = Path(sys.executable)
    if here.name.lower().startswith("python"):
        return str(here)
    for name in ("PythonSlicer", "PythonSlicer.exe"):  # inside 3D Slicer sys.executable is the application
        if (here.parent / name).is_file():
            return str(here.parent / name)
    return None


def start_background_build(folder: Path) -> bool:
    """Start ``python -m hipposnn.native --build FOLDER`` detached from this process; True if started."""
    python = _interpreter()
    if python is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    kwargs: dict = {}
    if os.name == "nt":  # pragma: no cover - Windows
        kwargs["creationflags"] = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(
            subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    else:
        kwargs["start_new_session"] = True  # survives the end (or Ctrl-C) of this process
    with open(folder / "build.log", "ab") as logfile:
        proc = subprocess.Popen([python, "-m", "hipposnn.native", "--build", str(folder)], env=env,
                                stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, close_fds=True,
                                **kwargs)
    (folder / BUILDING).write_text(f"{proc.pid}\n", encoding="utf-8")
    return True


def kernels(wait: Optional[bool] = None) -> Optional[Any]:
    """The compiled kernel module, or None (PyTorch path) when unavailable, disabled or still compiling.

    ``wait=True`` (or ``HIPPOSNN_NATIVE=wait``) compiles in the foreground when needed. The answer
    is decided once per process.
    """
    global _module, _tried
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        _tried = True
        mode = os.environ.get("HIPPOSNN_NATIVE", "1").strip().lower()
        if mode == "0":
            return None
        if wait is None:
            wait = mode == "wait"
        try:
            folder = build_dir()
            if (folder / READY).is_file():
                _module = _import_built(folder)
            elif (folder / FAILED).is_file() and not wait:
                log.info("fused IF kernels unavailable (see %s); using the PyTorch path", folder / "build.log")
            elif wait:
                _module = build(folder)
            elif (folder / BUILDING).is_file() and not _building(folder):
                # the background compile ended without a result (killed, out of memory): do not retry on
                # every run; HIPPOSNN_NATIVE=wait retries in the foreground
                (folder / FAILED).write_text("the background compile ended without a result\n", encoding="utf-8")
                log.info("fused IF kernels unavailable (background compile ended); using the PyTorch path")
            elif _building(folder):
                log.warning("hipposnn: the fused C++ spiking kernels are still compiling in the background; "
                            "this run uses the PyTorch path (same results)")
            elif start_background_build(folder):
                log.warning("hipposnn: compiling the fused C++ spiking kernels in the background (once, 1-2 min); "
                            "this run uses the PyTorch path (same results), later runs the faster kernels")
        except Exception as exc:  # unwritable cache, no compiler: fall back quietly
            log.info("fused IF kernels unavailable (%s); using the PyTorch path", exc)
            _module = None
    return _module


def usable(*tensors: Tensor) -> bool:
    """Whether the fused kernels can run on these [T, ...] tensors (CPU float32, time-major dense)."""
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != _float32() or t.dim() < 2:
            return False
        if t.stride(0) != t[0].numel() or not _dense(t[0]):
            return False
    return kernels() is not None


def _float32():
    import torch

    return torch.float32


def _dense(t: Tensor) -> bool:
    import torch

    if t.is_contiguous():
        return True
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def _main(argv: list) -> int:
    """``python -m hipposnn.native --build FOLDER``: the background compile."""
    if len(argv) != 2 or argv[0] != "--build":
        print("usage: python -m hipposnn.native --build FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    try:
        os.nice(10)  # pragma: no cover - not on Windows
    except (AttributeError, OSError):  # pragma: no cover
        pass
    try:
        build(folder)
        print("fused IF kernels compiled", flush=True)
        return 0
    except Exception as exc:
        print(f"fused IF kernels could not be compiled: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
