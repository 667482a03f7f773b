"""Conversion and fine-tuning of the user's own models, run in a separate process.

Fine-tuning takes minutes to hours and the first spiking run may build C++ kernels: run in Slicer's
process it would freeze the GUI between training steps. So, like SlicerMONAIAuto3DSeg runs its
inference, the work runs in a child process, ``PythonSlicer -m hipposnn convert|finetune ...`` (the
core's own command line, from this module's folder), whose output a reader thread collects; a
``qt.QTimer`` on the main thread drains it (progress lines to the progress callback, other lines to
the log) and Cancel kills the process. Console callers get a blocking call (``waitForCompletion``).
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import qt
import slicer
from hipposnn.errors import Cancelled
from hipposnn.progress import LINE_PREFIX
from slicer.i18n import tr as _

ProgressCallback = Callable[[float, str], bool]
LogCallback = Callable[[str], None]

#: The folder holding the core package ``hipposnn`` (this module's folder): the child's working folder,
#: so that ``-m hipposnn`` runs the copy shipped with the module.
CORE_PARENT = Path(__file__).resolve().parents[1]


def pythonSlicerExecutable() -> str:
    """Slicer's own Python launcher (same packages as Slicer's Python: torch, nibabel): on the PATH Slicer
    sets, or next to the application (inside Slicer ``sys.executable`` is the application itself)."""
    path = shutil.which("PythonSlicer")
    if path:
        return path
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(_("PythonSlicer was not found: cannot start the training process"))


class TrainingProcess:
    """One run of ``-m hipposnn ARGUMENTS`` in a child process, polled from the GUI thread.

    ``state`` goes "created" -> "running" -> "succeeded" | "failed" | "cancelled".
    ``finishedCallback(process)`` is called once when it ends.
    """

    def __init__(
        self,
        arguments: List[str],
        outputPath: str,
        pythonExecutable: Optional[str] = None,
        progressCallback: Optional[ProgressCallback] = None,
        logCallback: Optional[LogCallback] = None,
        finishedCallback: Optional[Callable[[TrainingProcess], None]] = None,
        pollIntervalMs: int = 200,
    ) -> None:
        self.arguments = list(arguments)
        self.outputPath = outputPath
        self.pythonExecutable = pythonExecutable
        self.progressCallback = progressCallback
        self.logCallback = logCallback
        self.finishedCallback = finishedCallback
        self.pollIntervalMs = pollIntervalMs
        self.state = "created"
        self.errorMessage = ""
        self.lines: List[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._process = None
        self._reader: Optional[threading.Thread] = None
        self._timer = None
        self._killAt: Optional[float] = None
        self._finished = False
        self._outputExisted = False

    @property
    def commandLine(self) -> List[str]:
        return [self.pythonExecutable or pythonSlicerExecutable(), "-m", "hipposnn"] + self.arguments

    def start(self) -> TrainingProcess:
        """Launch the child process and the polling timer."""
        environment = {"PYTHONUNBUFFERED": "1", "HIPPOSNN_PROGRESS": "lines"}
        self._outputExisted = Path(self.outputPath).exists()
        self._process = slicer.util.launchConsoleProcess(
            self.commandLine, updateEnvironment=environment, cwd=str(CORE_PARENT)
        )
        self.state = "running"
        self._reader = threading.Thread(target=self._read, name="HippoSNN training output", daemon=True)
        self._reader.start()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.pollIntervalMs)
        self._timer.connect("timeout()", self.poll)
        self._timer.start()
        return self

    def _read(self) -> None:
        """Reader thread: only moves output lines into the queue (no Qt or MRML calls off the main thread)."""
        for line in self._process.stdout:
            self._queue.put(line.rstrip("\r\n"))
        self._queue.put(None)

    def _handle(self, line: str) -> None:
        if line.startswith(LINE_PREFIX):
            fraction, _sep, message = line[len(LINE_PREFIX) :].strip().partition(" ")
            if self.progressCallback is not None:
                try:
                    self.progressCallback(float(fraction), message)
                except ValueError:
                    pass
            return
        if not line.strip():
            return
        self.lines.append(line)
        if self.logCallback is not None:
            self.logCallback(line)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def poll(self) -> bool:
        """Drain the output (main thread); True once the process has ended and everything was read."""
        if self._finished:
            return True
        if self._process is None:
            return False
        if self._killAt is not None and time.time() > self._killAt and self._process.poll() is None:
            self._process.kill()  # did not stop on terminate()
        ended = False
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            self._handle(line)
        if not ended:
            return False
        returnCode = self._process.wait()
        if self.state == "running":  # not cancelled meanwhile
            if returnCode == 0 and Path(self.outputPath).is_file():
                self.state = "succeeded"
            else:
                self.state = "failed"
                self.errorMessage = self._failureMessage(returnCode)
        elif self.state == "cancelled":
            self._discardOutput()
        self._finish()
        return True

    def _failureMessage(self, returnCode: int) -> str:
        errors = [line.split("error:", 1)[1].strip() for line in self.lines if line.startswith("hipposnn: error:")]
        if errors:
            return errors[-1]
        tail = "\n".join(self.lines[-5:])
        return _("The training process ended with code {code}.\n{tail}").format(code=returnCode, tail=tail)

    def _discardOutput(self) -> None:
        """A cancelled run leaves no model: the child may have written its file before it saw the signal
        (a small conversion finishes faster than the parent polls), so a file it created is removed."""
        output = Path(self.outputPath)
        if not self._outputExisted and output.is_file():
            output.unlink()

    def cancel(self) -> None:
        """Stop the child process (terminate, kill after 5 s); the state becomes "cancelled" at once."""
        if self.state != "running":
            return
        self.state = "cancelled"
        if self._process.poll() is None:
            self._process.terminate()
            self._killAt = time.time() + 5.0
        # the reader thread ends when the pipe closes; the next poll() then finishes the run

    def _finish(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.stop()
        if self.finishedCallback is not None:
            callback, self.finishedCallback = self.finishedCallback, None
            callback(self)

    def wait(self) -> TrainingProcess:
        """Block (processing GUI events) until the run ends; for console and batch use."""
        while not self.poll():
            slicer.app.processEvents()
            time.sleep(0.05)
        return self

    def raiseIfFailed(self) -> str:
        """The output path, or :class:`Cancelled` / RuntimeError with the child's one-line error."""
        if self.state == "cancelled":
            raise Cancelled(_("cancelled"))
        if self.state != "succeeded":
            raise RuntimeError(self.errorMessage)
        return self.outputPath


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def conversionArguments(annWeightsPath, dataFolder, outputFolder, timesteps, scale, coding, seed, device) -> List[str]:
    """Command-line arguments of ``hipposnn convert`` (paths made absolute: the child runs elsewhere)."""
    return [
        "convert", "--checkpoint", _absolute(annWeightsPath), "--data", _absolute(dataFolder),
        "--out", _absolute(outputFolder), "--timesteps", str(int(timesteps)), "--threshold-scale", str(float(scale)),
        "--coding", coding, "--seed", str(int(seed)), "--device", device,
    ]  # fmt: skip


def fineTuneArguments(
    initPath, dataFolder, outputFolder, epochs, timesteps, coding, seed, device, overwrite=False
) -> List[str]:
    """Command-line arguments of ``hipposnn finetune``."""
    return [
        "finetune", "--checkpoint", _absolute(initPath), "--data", _absolute(dataFolder),
        "--out", _absolute(outputFolder), "--epochs", str(int(epochs)), "--timesteps", str(int(timesteps)),
        "--coding", coding, "--seed", str(int(seed)), "--device", device,
    ] + (["--overwrite"] if overwrite else [])  # fmt: skip


class TrainingLogic:
    """Mixed into HippoSNNLogic: ``convertModel`` and ``fineTuneModel`` (child process)."""

    #: Python that runs the child process (None: Slicer's PythonSlicer). Console users may set it.
    pythonExecutable: Optional[str] = None

    def _prepareRun(self, interactive: bool, *paths: Tuple[Optional[str], str]) -> None:
        """Checks shared by conversion and fine-tuning, before any child process starts: each
        ``(path, what)`` is given (an empty field arrives as "" or, through ``str(Path(""))``, as "."),
        then the dependencies (torch) are there (asking to install them when ``interactive``)."""
        for value, what in paths:
            if not value or str(value) in ("", "."):
                raise ValueError(_("No {what} given").format(what=what))
        self.ensureDependencies(interactive)

    def _runCore(self, arguments, outputPath, progressCallback, logCallback, finishedCallback, waitForCompletion):
        process = TrainingProcess(
            arguments,
            outputPath,
            pythonExecutable=self.pythonExecutable,
            progressCallback=progressCallback,
            logCallback=logCallback or self.log,
            finishedCallback=finishedCallback,
        )
        self.log(_("Starting: {command}").format(command=" ".join(process.commandLine)))
        process.start()
        if not waitForCompletion:
            return process
        if progressCallback is not None:
            # console callers cancel by returning False from their callback, as with process()
            def forward(fraction: float, message: str) -> bool:
                if progressCallback(fraction, message) is False:
                    process.cancel()
                return True

            process.progressCallback = forward
        return process.wait().raiseIfFailed()

    def convertModel(
        self,
        annWeightsPath: str,
        dataFolder: str,
        outputFolder: str,
        timesteps: int = 200,
        scale: float = 0.7,
        coding: str = "ternary",
        seed: int = 0,
        device: Optional[str] = None,
        progressCallback: Optional[ProgressCallback] = None,
        interactive: bool = False,
        waitForCompletion: bool = True,
        logCallback: Optional[LogCallback] = None,
        finishedCallback: Optional[Callable[[TrainingProcess], None]] = None,
    ):
        """Early-stop ANN->SNN conversion (threshold balancing) on training slices of a labelled folder.

        :param annWeightsPath: HippoSNN ANN model file (``hipposnn train-ann`` output or the shipped ANN).
        :param dataFolder: MSD layout (``imagesTr/``, ``labelsTr/``) or a folder of image/label pairs
            (``<case>.nii.gz`` with ``<case>_label.nii.gz`` or ``<case>_seg.nii.gz``).
        :param outputFolder: where ``converted.pt`` is written.
        :param progressCallback: ``callback(fraction, message) -> bool``, told each balanced layer;
            with ``waitForCompletion`` returning False cancels (nothing is written).
        :param waitForCompletion: True (console, batch): block and return the path, raise on failure or
            :class:`hipposnn.errors.Cancelled`. False (GUI): return the running :class:`TrainingProcess`.
        :return: path of the converted SNN model file (or the running process).
        """
        self._prepareRun(
            interactive,
            (annWeightsPath, _("ANN weights file")),
            (dataFolder, _("data folder")),
            (outputFolder, _("output folder")),
        )
        arguments = conversionArguments(
            annWeightsPath, dataFolder, outputFolder, timesteps, scale, coding, seed, self.resolveDevice(device)
        )
        outputPath = os.path.join(_absolute(outputFolder), "converted.pt")
        return self._runCore(arguments, outputPath, progressCallback, logCallback, finishedCallback, waitForCompletion)

    @staticmethod
    def existingRunFiles(outputFolder: str) -> List[str]:
        """Checkpoints of a training run already in ``outputFolder`` (empty: nothing would be replaced)."""
        from hipposnn.options import existing_run_files

        return existing_run_files(outputFolder) if outputFolder else []

    def fineTuneModel(
        self,
        initPath: Optional[str],
        dataFolder: str,
        outputFolder: str,
        epochs: int = 10,
        timesteps: int = 32,
        coding: str = "ternary",
        seed: int = 0,
        device: Optional[str] = None,
        progressCallback: Optional[ProgressCallback] = None,
        interactive: bool = False,
        waitForCompletion: bool = True,
        logCallback: Optional[LogCallback] = None,
        finishedCallback: Optional[Callable[[TrainingProcess], None]] = None,
        overwrite: bool = False,
    ):
        """Spike-based fine-tuning (BPTT) of a converted SNN on a labelled folder (as in :meth:`convertModel`).

        :param initPath: converted SNN model file; None fine-tunes the shipped SNN of ``coding``.
        :param overwrite: replace a training run already in ``outputFolder`` (see :meth:`existingRunFiles`);
            without it such a folder is refused, as on the command line.
        :return: path of the best model (by validation Dice), ``best.pt`` in ``outputFolder`` (or the
            running process when ``waitForCompletion`` is False).
        """
        self._prepareRun(interactive, (dataFolder, _("data folder")), (outputFolder, _("output folder")))
        if not initPath:
            from hipposnn.weights import default_model_path

            initPath = str(default_model_path("snn", coding))
        arguments = fineTuneArguments(
            initPath, dataFolder, outputFolder, epochs, timesteps, coding, seed, self.resolveDevice(device), overwrite
        )
        outputPath = os.path.join(_absolute(outputFolder), "best.pt")
        return self._runCore(arguments, outputPath, progressCallback, logCallback, finishedCallback, waitForCompletion)
