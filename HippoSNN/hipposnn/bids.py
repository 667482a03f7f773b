"""Cohorts: a BIDS dataset in, BIDS derivatives and one volumes table out; resumable, parallel, shardable.

``hipposnn bids BIDS_DIR OUTPUT_DIR participant`` segments every ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``
(:func:`run_participants`); ``... group`` gathers the per-scan results into
``OUTPUT_DIR/hipposnn_volumes.tsv`` and ``.csv`` (:func:`write_group_table`). Both discover the
scans the same way (:func:`discover`), so the table has one row per selected scan: ``ok``, ``failed``
(with the reason) or ``missing`` (never run, killed, or its output does not validate).

Outputs per scan (BIDS derivatives; the entities of the source name are kept, ``desc-hippocampus``
is added)::

    OUTPUT_DIR/dataset_description.json                 DatasetType "derivative", GeneratedBy HippoSNN
    OUTPUT_DIR/desc-hippocampus_dseg.tsv                the label lookup (0 background, 1 right, 2 left)
    OUTPUT_DIR/sub-01/ses-A/anat/sub-01_ses-A_desc-hippocampus_dseg.nii.gz   labels, grid of the T1w
    OUTPUT_DIR/sub-01/ses-A/anat/sub-01_ses-A_desc-hippocampus_dseg.json     sidecar: summary, settings,
                                                        model SHA-256, output SHA-256 and size
    OUTPUT_DIR/logs/sub-01_ses-A_error.json             only for a failed scan (listed in .bidsignore)

**Complete** means: the sidecar parses, says ``ok``, records the same settings fingerprint (model file
SHA-256, side, ROI mode, timesteps, coding, threshold, readout smoothing, seed, refine) and the same source
file size and modification time as now, and the label map's size and SHA-256 match what it records. Both files are
written under temporary names and renamed (label map first, sidecar last), so a kill at any moment
leaves either a complete scan or one that is redone. A scan that is redone first loses its old outputs
and any temporary leftovers.

**Parallel**: ``jobs`` worker processes (spawned, so safe with torch and SimpleITK threads), each with
``threads`` = cores // jobs torch and SimpleITK threads; a worker that dies (out of memory, crash) is
replaced and its scan retried once. ``jobs = 1`` runs in this process (the Slicer console case).
Exceptions of one scan are recorded for that scan only; the others go on.

**Shards**: ``shard = (k, n)`` keeps the subjects at positions k-1, k-1+n, ... of the sorted selected
subject list (round robin: at most one subject apart, all sessions of a subject in one shard); every
shard writes into the same OUTPUT_DIR, and the group step (run once, after all shards) reads them all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import __version__
from .atomicio import atomic_write, remove_quietly
from .errors import Cancelled, HippoSNNError

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[float, str], bool]
#: ``segment_fn(image, settings: dict, progress) -> result`` with ``result.labels`` (uint8 array in the
#: image grid) and ``result.summary()`` (JSON-ready dict); the default runs :func:`hipposnn.inference.segment_image`.
SegmentFn = Callable[[Any, Dict[str, Any], Optional[Progress]], Any]

DESC = "hippocampus"
TABLE_NAME = "hipposnn_volumes"
LOG_DIR = "logs"
BIDS_VERSION = "1.9.0"
_LABEL = r"[A-Za-z0-9]+"
_SUB_DIR = re.compile(rf"^sub-({_LABEL})$")
_SES_DIR = re.compile(rf"^ses-({_LABEL})$")
_T1W_NAME = re.compile(rf"^(sub-{_LABEL}(?:_[A-Za-z]+-{_LABEL})*)_T1w\.nii(?:\.gz)?$")
_ENTITY = re.compile(rf"([A-Za-z]+)-({_LABEL})")
#: Settings that change the label map; ``device`` and ``threads`` do not (a CPU result is kept on GPU nodes).
FINGERPRINT_KEYS = ("model", "timesteps", "coding", "threshold", "smooth", "seed", "side", "roi", "refine")
MAX_THREADS = 8  # what segment_image uses at most by default: more threads stop paying off for one scan

COLUMNS = (
    "participant_id", "session_id", "source", "status",
    "right_mm3", "left_mm3", "etiv_mm3", "right_per_etiv", "left_per_etiv", "asymmetry_index",
    "quality", "quality_right", "quality_left", "reasons_right", "reasons_left", "qc_warnings",
    "model", "coding", "timesteps", "threshold", "seed", "seconds", "model_sha256", "error",
)
#: Decimals written per numeric column (plain positional notation, never an exponent).
_DECIMALS = {"right_mm3": 1, "left_mm3": 1, "etiv_mm3": 1, "right_per_etiv": 8, "left_per_etiv": 8,
             "asymmetry_index": 6, "threshold": 6, "seconds": 2, "timesteps": 0, "seed": 0}


# --------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """One T1w file of the dataset."""

    subject: str  # label without "sub-"
    session: Optional[str]  # label without "ses-", None without sessions
    path: Path  # the T1w file
    relpath: str  # its path relative to BIDS_DIR, with "/" separators
    prefix: str  # the file name's entities, e.g. "sub-01_ses-A_run-1"

    @property
    def participant_id(self) -> str:
        return f"sub-{self.subject}"

    @property
    def session_id(self) -> Optional[str]:
        return None if self.session is None else f"ses-{self.session}"

    @property
    def folder(self) -> str:
        """Derivatives folder relative to OUTPUT_DIR, e.g. ``sub-01/ses-A/anat``."""
        parts = [self.participant_id] + ([self.session_id] if self.session_id else []) + ["anat"]
        return "/".join(parts)  # type: ignore[arg-type]


def _clean_labels(labels: Optional[Iterable[str]], prefix: str, what: str) -> Optional[List[str]]:
    """``sub-01``/``01`` -> ``01``; a label BIDS does not allow is a usage error."""
    if not labels:
        return None
    if isinstance(labels, str):
        labels = [labels]
    out: List[str] = []
    for raw in labels:
        for text in str(raw).replace(",", " ").split():
            label = text[len(prefix):] if text.startswith(prefix) else text
            if not re.fullmatch(_LABEL, label):
                raise HippoSNNError(f"invalid {what} label {text!r}: BIDS labels are letters and digits only")
            if label not in out:
                out.append(label)
    return out or None


def _check_description(bids_dir: Path) -> None:
    path = bids_dir / "dataset_description.json"
    if not path.is_file():
        raise HippoSNNError(f"{bids_dir} is not a BIDS dataset: dataset_description.json is missing "
                            "(add one with Name and BIDSVersion, or pass --skip-bids-validation)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise HippoSNNError(f"{path} is not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise HippoSNNError(f"{path} must hold a JSON object")
    if data.get("DatasetType") == "derivative" and str(data.get("GeneratedBy", "")).find("HippoSNN") >= 0:
        raise HippoSNNError(f"{bids_dir} is a HippoSNN output folder, not the raw BIDS dataset")


def discover(
    bids_dir: PathLike,
    participant_labels: Optional[Iterable[str]] = None,
    session_labels: Optional[Iterable[str]] = None,
    validate: bool = True,
) -> List[Scan]:
    """Every ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` of ``bids_dir``, sorted; filters by label.

    Raises :class:`HippoSNNError` (one line) for a folder that is not a BIDS dataset, a requested
    label that does not exist, T1w names that contradict their folders, two T1w files that would give
    the same output, or an empty selection. ``validate=False`` skips the dataset_description check.
    """
    root = Path(bids_dir).expanduser()
    if not root.exists():
        raise HippoSNNError(f"BIDS folder not found: {root}")
    if not root.is_dir():
        raise HippoSNNError(f"BIDS_DIR must be a folder, got the file {root}")
    if validate:
        _check_description(root)
    subjects_wanted = _clean_labels(participant_labels, "sub-", "participant")
    sessions_wanted = _clean_labels(session_labels, "ses-", "session")
    problems: List[str] = []
    subject_dirs: Dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if not entry.name.startswith("sub-") or not entry.is_dir():
            continue
        match = _SUB_DIR.match(entry.name)
        if not match:
            problems.append(f"{entry.name}/: subject folders are named sub-<letters and digits>")
            continue
        subject_dirs[match.group(1)] = entry
    if not subject_dirs and not problems:
        raise HippoSNNError(f"{root} holds no sub-<label> folders: not a BIDS dataset")
    if subjects_wanted:
        unknown = [s for s in subjects_wanted if s not in subject_dirs]
        if unknown:
            raise HippoSNNError(f"participant(s) not found in {root}: {', '.join('sub-' + s for s in unknown)}")
    scans: List[Scan] = []
    sessions_seen = set()
    for subject, sub_dir in subject_dirs.items():
        if subjects_wanted and subject not in subjects_wanted:
            continue
        places: List[Tuple[Optional[str], Path]] = [(None, sub_dir / "anat")]
        for entry in sorted(sub_dir.iterdir()):
            if entry.name.startswith("ses-") and entry.is_dir():
                match = _SES_DIR.match(entry.name)
                if not match:
                    problems.append(f"{sub_dir.name}/{entry.name}/: session folders are named ses-<letters and digits>")
                    continue
                sessions_seen.add(match.group(1))
                places.append((match.group(1), entry / "anat"))
        for session, anat in places:
            if sessions_wanted and session not in sessions_wanted:
                continue
            if not anat.is_dir():
                continue
            expected = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            for entry in sorted(anat.iterdir()):
                name = entry.name
                if name.startswith(".") or not (name.endswith("_T1w.nii.gz") or name.endswith("_T1w.nii")):
                    continue
                rel = entry.relative_to(root).as_posix()
                match = _T1W_NAME.match(name)
                if not match:
                    problems.append(f"{rel}: not a BIDS name (sub-<label>[_ses-<label>][_key-value...]_T1w.nii.gz)")
                    continue
                prefix = match.group(1)
                entities = _ENTITY.findall(prefix)
                head = "_".join(f"{k}-{v}" for k, v in entities[: 2 if session else 1])
                if head != expected:
                    where = anat.relative_to(root).as_posix()
                    problems.append(f"{rel}: a file in {where}/ must start with {expected}_")
                    continue
                if session is None and len(entities) > 1 and entities[1][0] == "ses":
                    problems.append(f"{rel}: names ses-{entities[1][1]} but is not in a ses-{entities[1][1]}/ folder")
                    continue
                scans.append(Scan(subject, session, entry, rel, prefix))
    if sessions_wanted:
        unknown = [s for s in sessions_wanted if s not in sessions_seen]
        if unknown:
            raise HippoSNNError(f"session(s) not found in {root}: {', '.join('ses-' + s for s in unknown)}")
    by_prefix: Dict[Tuple[str, str], List[Scan]] = {}
    for scan in scans:
        by_prefix.setdefault((scan.folder, scan.prefix), []).append(scan)
    for (_, prefix), same in by_prefix.items():
        if len(same) > 1:
            problems.append(f"{' and '.join(s.relpath for s in same)}: two T1w files for {prefix} (keep one)")
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise HippoSNNError(f"invalid BIDS layout in {root}: " + "; ".join(problems[:3]) + more)
    if not scans:
        raise HippoSNNError(f"no T1w scans (sub-*/[ses-*/]anat/*_T1w.nii[.gz]) selected in {root}")
    return sorted(scans, key=lambda s: (s.subject, s.session or "", s.prefix))


def parse_shard(text: str) -> Tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) -> (K, N); anything else is a usage error."""
    match = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", str(text))
    if not match:
        raise HippoSNNError(f"--shard must be K/N, e.g. 3/10, got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise HippoSNNError(f"--shard K/N needs N >= 1, got {text!r}")
    if not 1 <= k <= n:
        hint = " (shards count from 1: with a 0-based array use $((SLURM_ARRAY_TASK_ID + 1)))" if k == 0 else ""
        raise HippoSNNError(f"--shard K/N needs 1 <= K <= N, got {text!r}{hint}")
    return k, n


def shard_scans(scans: Sequence[Scan], k: int, n: int) -> List[Scan]:
    """Shard ``k`` of ``n`` (1-based): round robin over the sorted subjects of ``scans``."""
    subjects = sorted({s.subject for s in scans})
    mine = {subject for i, subject in enumerate(subjects) if i % n == k - 1}
    return [s for s in scans if s.subject in mine]


# --------------------------------------------------------------------------------------------------
# Derivatives layout, records, completeness
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outputs:
    dseg: Path
    sidecar: Path
    error: Path


def derivative_paths(scan: Scan, out_dir: PathLike) -> Outputs:
    """Where a scan's label map, sidecar JSON and (on failure) error record go."""
    out = Path(out_dir)
    folder = out / scan.folder
    stem = f"{scan.prefix}_desc-{DESC}_dseg"
    return Outputs(folder / f"{stem}.nii.gz", folder / f"{stem}.json", out / LOG_DIR / f"{scan.prefix}_error.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    """Never half a file under ``path``: the package's atomic writer (hidden temporary name in the same
    folder, umask-respecting mode, fsync, rename). Text mode as these files always had: on Windows
    their line ends stay CRLF. The hidden temporary name holds ``path.name``, so :func:`_clear` finds a
    killed writer's leftover."""
    atomic_write(path, lambda name: Path(name).write_text(text, encoding="utf-8"))


def _clear(outputs: Outputs) -> None:
    """Remove a scan's outputs and hidden temporary leftovers (a killed writer's)."""
    remove_quietly(outputs.sidecar)  # the sidecar first: from here on the scan never looks complete
    remove_quietly(outputs.dseg)
    folder = outputs.dseg.parent
    if folder.is_dir():
        names = (outputs.dseg.name, outputs.sidecar.name)
        for entry in folder.iterdir():
            if entry.name.startswith(".") and any(n in entry.name for n in names):
                remove_quietly(entry)


def _source_stat(path: Path) -> Dict[str, Any]:
    st = path.stat()
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _finite(value: Any) -> Any:
    """JSON-ready copy: non-finite floats become None (JSON has no NaN), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value))


def fingerprint(settings: Dict[str, Any], model_sha256: str) -> Dict[str, Any]:
    """What a complete output must have been made with (see :data:`FINGERPRINT_KEYS`)."""
    fp = {k: settings.get(k) for k in FINGERPRINT_KEYS}
    fp["model_sha256"] = model_sha256
    return _normal(fp)


def read_record(scan: Scan, out_dir: PathLike) -> Tuple[str, Dict[str, Any], str]:
    """(status, sidecar HippoSNN dict or error record, reason): status ``ok``, ``failed`` or ``missing``.

    ``ok`` needs a sidecar that parses and a label map whose size and SHA-256 match it.
    """
    outputs = derivative_paths(scan, out_dir)
    reason = "not run yet"
    if outputs.sidecar.is_file():
        try:
            record = json.loads(outputs.sidecar.read_text(encoding="utf-8"))["HippoSNN"]
            expected = record["output"]
            if record.get("status") != "ok":
                reason = "sidecar does not say ok"
            elif not outputs.dseg.is_file():
                reason = "label map missing"
            elif outputs.dseg.stat().st_size != expected["bytes"] or _sha256(outputs.dseg) != expected["sha256"]:
                reason = "label map differs from its sidecar (half-written or changed)"
            else:
                return "ok", record, ""
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            reason = "sidecar unreadable (half-written?)"
    elif outputs.dseg.exists():
        reason = "label map without sidecar (interrupted)"
    if outputs.error.is_file():
        try:
            record = json.loads(outputs.error.read_text(encoding="utf-8"))
            if record.get("source") == scan.relpath:
                return "failed", record, str(record.get("error", "failed"))
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            pass
    return "missing", {}, reason


def is_complete(scan: Scan, out_dir: PathLike, fp: Dict[str, Any]) -> Tuple[bool, str]:
    """True when the scan's outputs validate, were made with ``fp`` and from the current source file."""
    status, record, reason = read_record(scan, out_dir)
    if status != "ok":
        return False, reason
    if record.get("fingerprint") != fp:
        return False, "made with other settings"
    try:
        if record.get("source", {}).get("stat") != _source_stat(scan.path):
            return False, "source file changed"
    except OSError:
        return False, "source file unreadable"
    return True, ""


def _raw_link(bids_dir: Path, out_dir: Path) -> str:
    try:
        return os.path.relpath(bids_dir.resolve(), out_dir.resolve()).replace(os.sep, "/")
    except ValueError:  # other drive (Windows)
        return bids_dir.resolve().as_uri()


def prepare_output(bids_dir: PathLike, out_dir: PathLike) -> Path:
    """Create OUTPUT_DIR with dataset_description.json, the dseg lookup table and .bidsignore.

    Refuses BIDS_DIR itself and a folder that holds another dataset's dataset_description.json.
    Safe to call from every shard at once (same content, atomic writes).
    """
    bids = Path(bids_dir).expanduser()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise HippoSNNError(f"OUTPUT_DIR {out} is a file: give a folder")
    if out.resolve() == bids.resolve():
        raise HippoSNNError(f"OUTPUT_DIR must not be BIDS_DIR itself: use e.g. {bids / 'derivatives' / 'hipposnn'}")
    description = out / "dataset_description.json"
    if description.is_file():
        try:
            existing = json.loads(description.read_text(encoding="utf-8"))
            ours = any(g.get("Name") == "HippoSNN" for g in existing.get("GeneratedBy", []))
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise HippoSNNError(f"{out} holds another dataset (its dataset_description.json is not HippoSNN's): "
                                f"choose an empty folder, e.g. {bids / 'derivatives' / 'hipposnn'}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HippoSNNError(f"cannot create OUTPUT_DIR {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise HippoSNNError(f"OUTPUT_DIR is not writable: {out}")
    files = {
        description: json.dumps({
            "Name": "HippoSNN hippocampus segmentation",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "HippoSNN", "Version": __version__,
                             "Description": "spiking U-Net segmentation of the left and right hippocampus"}],
            "DatasetLinks": {"raw": _raw_link(bids, out)},
            "SourceDatasets": [{"URL": "bids:raw:"}],
        }, indent=2) + "\n",
        out / f"desc-{DESC}_dseg.tsv": ("index\tname\tabbreviation\n"
                                        "1\tRight-Hippocampus\tRHIP\n2\tLeft-Hippocampus\tLHIP\n"),
        out / ".bidsignore": f"{LOG_DIR}/\n{TABLE_NAME}.*\n",
    }
    try:
        for path, text in files.items():
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                _write_atomic(path, text)
    except OSError as exc:
        raise HippoSNNError(f"cannot write in OUTPUT_DIR {out}: {exc.strerror or exc}") from None
    return out


# --------------------------------------------------------------------------------------------------
# One scan (runs in a worker process, or in this process with jobs = 1)
# --------------------------------------------------------------------------------------------------


def _default_segment(image: Any, settings: Dict[str, Any], progress: Optional[Progress]) -> Any:
    from .inference import SegmentationSettings, segment_image

    return segment_image(image, SegmentationSettings(**settings), progress)


def _set_threads(threads: int) -> None:
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    except Exception:  # noqa: BLE001 - SimpleITK's own default is a fine fallback
        pass


def _worker_init(threads: int, warm: Optional[Dict[str, Any]] = None) -> None:
    """Worker start: thread counts, then (real segmentation only) torch and the model loaded once, so
    that a worker's first scan does not carry the imports (~1 s) and every scan costs the same."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    _set_threads(threads)
    if warm is not None:
        try:
            from .inference import load_segmentation_model

            load_segmentation_model(warm.get("model", "snn"), warm.get("checkpoint"), warm.get("device", "cpu"),
                                    warm.get("coding"), warm.get("roi", "auto"))
        except Exception:  # noqa: BLE001 - the scan itself will report the problem
            pass


def _parent_alive(parent: Optional[int]) -> Progress:
    """Cancel (progress returns False) once the process that started this worker is gone."""

    def alive(fraction: float = 0.0, message: str = "") -> bool:
        return parent is None or os.getppid() == parent

    return alive


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, HippoSNNError):
        return first or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {first}"[:300]


def process_scan(
    scan: Scan,
    out_dir: PathLike,
    settings: Dict[str, Any],
    fp: Dict[str, Any],
    segment_fn: Optional[SegmentFn] = None,
    progress: Optional[Progress] = None,
) -> Dict[str, Any]:
    """Segment one scan and write its outputs; returns ``{"status": "ok"|"failed"|"cancelled", ...}``.

    Exceptions become a ``failed`` record (``OUTPUT_DIR/logs/<prefix>_error.json``) except
    KeyboardInterrupt/SystemExit, which propagate after removing partial outputs.
    """
    from .io import load_image, save_image

    outputs = derivative_paths(scan, out_dir)
    t0 = time.perf_counter()
    _clear(outputs)
    try:
        stat = _source_stat(scan.path) if scan.path.exists() else None
        image = load_image(scan.path)
        t_read = time.perf_counter() - t0
        result = (segment_fn or _default_segment)(image, dict(settings), progress)
        t1 = time.perf_counter()
        outputs.dseg.parent.mkdir(parents=True, exist_ok=True)
        save_image(result.labels, image.affine, outputs.dseg, like=image)
        summary = result.summary()
        summary.setdefault("timings_s", {})
        summary["timings_s"]["read"] = round(t_read, 3)
        output = {"file": outputs.dseg.name, "bytes": outputs.dseg.stat().st_size, "sha256": _sha256(outputs.dseg)}
        seconds = time.perf_counter() - t0  # read to written and hashed (the sidecar itself: ~1 ms)
        record = {
            "status": "ok",
            "version": __version__,
            "fingerprint": fp,
            "source": {"file": scan.relpath, "stat": stat},
            "output": output,
            "seconds": round(seconds, 3),
            "seconds_write": round(time.perf_counter() - t1, 3),
            "summary": summary,
        }
        sidecar = {
            "Description": "Left and right hippocampus segmented by HippoSNN (spiking U-Net), "
                           "in the grid of the source T1w",
            "Sources": [f"bids:raw:{scan.relpath}"],
            "Manual": False,
            "HippoSNN": record,
        }
        _write_atomic(outputs.sidecar, json.dumps(_finite(sidecar), indent=1, allow_nan=False) + "\n")
        remove_quietly(outputs.error)
        return {"key": scan.relpath, "status": "ok", "seconds": seconds}
    except Cancelled:
        _clear(outputs)
        return {"key": scan.relpath, "status": "cancelled", "error": "cancelled"}
    except Exception as exc:  # noqa: BLE001 - one bad scan must never stop the others
        _clear(outputs)
        message = _message(exc)
        error = {"source": scan.relpath, "status": "failed", "error": message, "version": __version__,
                 "fingerprint": fp, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "traceback": traceback.format_exc() if not isinstance(exc, HippoSNNError) else None}
        try:
            _write_atomic(outputs.error, json.dumps(error, indent=1) + "\n")
        except OSError:
            pass
        return {"key": scan.relpath, "status": "failed", "error": message}
    except BaseException:
        _clear(outputs)
        raise


def _worker(scan: Scan, out_dir: str, settings: Dict[str, Any], fp: Dict[str, Any],
            segment_fn: Optional[SegmentFn], parent: int) -> Dict[str, Any]:
    return process_scan(scan, out_dir, settings, fp, segment_fn, _parent_alive(parent))


# --------------------------------------------------------------------------------------------------
# Participant level
# --------------------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What :func:`run_participants` did; ``failed`` maps the scan's relative path to the reason."""

    selected: int = 0
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    not_run: List[str] = field(default_factory=list)  # cancelled before or while running
    seconds: float = 0.0
    jobs: int = 1
    threads: int = 1

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(jobs: int) -> int:
    return max(1, min(MAX_THREADS, available_cores() // max(1, jobs)))


def model_sha256(settings: Dict[str, Any]) -> str:
    """SHA-256 of the model file these settings use (checks that it exists)."""
    from .weights import chosen_model_path

    path = chosen_model_path(settings.get("model", "snn"), settings.get("checkpoint"), settings.get("coding"),
                             settings.get("roi", "auto"))
    if not path.is_file():
        raise HippoSNNError(f"model file not found: {path}")
    return _sha256(path)


def _settings_dict(settings: Any) -> Dict[str, Any]:
    if settings is None:
        from .inference import SegmentationSettings

        settings = SegmentationSettings()
    if not isinstance(settings, dict):
        from dataclasses import asdict

        validate = getattr(settings, "validate", None)
        if validate is not None:
            validate()
        settings = asdict(settings)
    data = dict(settings)
    if isinstance(data.get("roi"), tuple):
        data["roi"] = list(data["roi"])
    from .inference import SegmentationSettings

    try:
        SegmentationSettings(**data).validate()  # fail once, here, rather than once per scan
    except TypeError as exc:
        raise HippoSNNError(f"unknown segmentation setting: {exc}") from None
    return data


def run_participants(
    bids_dir: PathLike,
    output_dir: PathLike,
    settings: Any = None,
    participant_labels: Optional[Iterable[str]] = None,
    session_labels: Optional[Iterable[str]] = None,
    jobs: int = 1,
    threads: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
    progress: Optional[Progress] = None,
    validate: bool = True,
    segment_fn: Optional[SegmentFn] = None,
    log: Optional[Callable[[str], None]] = None,
) -> BatchReport:
    """Segment every selected scan not complete yet; returns a :class:`BatchReport`.

    ``settings``: a :class:`~hipposnn.inference.SegmentationSettings` (or its dict; default settings
    when None). ``progress(fraction, message) -> bool`` is called as scans finish (and within the scan
    when ``jobs == 1``); returning False stops: no new scan starts, scans in flight finish (``jobs > 1``)
    or stop at their next step (``jobs == 1``). Failed scans do not raise: see ``report.failed``.
    """
    t_start = time.perf_counter()
    if int(jobs) < 1:
        raise HippoSNNError(f"jobs must be at least 1, got {jobs}")
    jobs = int(jobs)
    if jobs > 1 and "slicer" in sys.modules:
        raise HippoSNNError("inside 3D Slicer use jobs=1: worker processes need a plain Python interpreter")
    data = _settings_dict(settings)
    threads = int(threads) if threads else default_threads(jobs)
    data["threads"] = threads
    scans = discover(bids_dir, participant_labels, session_labels, validate)
    if shard is not None:
        scans = shard_scans(scans, *shard)
    fp = fingerprint(data, model_sha256(data))
    out = prepare_output(bids_dir, output_dir)
    report = BatchReport(selected=len(scans), jobs=jobs, threads=threads)
    todo: List[Scan] = []
    for scan in scans:
        complete, _ = is_complete(scan, out, fp)
        (report.skipped.append(scan.relpath) if complete else todo.append(scan))
    say = log or (lambda text: None)
    if shard is not None:
        say(f"shard {shard[0]}/{shard[1]}: {len(scans)} scan(s) of {len({s.subject for s in scans})} subject(s)")
    say(f"{len(scans)} scan(s) selected: {len(report.skipped)} already complete, {len(todo)} to run "
        f"({jobs} job(s) x {threads} thread(s))")
    total = max(1, len(todo))
    finished = 0

    def note(result: Dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        key = result["key"]
        if result["status"] == "ok":
            report.done.append(key)
        elif result["status"] == "failed":
            report.failed[key] = result["error"]
            say(f"failed: {key}: {result['error']}")
        else:
            report.not_run.append(key)

    def outer(fraction: float, message: str) -> bool:
        if progress is None:
            return True
        return progress(min(1.0, fraction), message) is not False

    if todo and jobs == 1:
        previous = _get_sitk_threads()
        _set_threads(threads)
        try:
            for i, scan in enumerate(todo):
                if not outer(i / total, f"{scan.relpath}"):
                    report.not_run.extend(s.relpath for s in todo[i:])
                    break

                def inner(fraction: float, message: str, i: int = i, scan: Scan = scan) -> bool:
                    return outer((i + min(max(fraction, 0.0), 1.0)) / total, f"{scan.participant_id}: {message}")

                result = process_scan(scan, out, data, fp, segment_fn, inner)
                note(result)
                if result["status"] == "cancelled":
                    report.not_run.extend(s.relpath for s in todo[i + 1:])
                    break
                outer((i + 1) / total, f"{scan.participant_id} {result['status']}")
        finally:
            if previous:
                _set_threads(previous)
    elif todo:
        outer(0.0, f"starting {min(jobs, len(todo))} worker(s)")
        _run_pool(todo, out, data, fp, segment_fn, jobs, threads, note, outer, report, say)
    report.seconds = time.perf_counter() - t_start
    return report


def _get_sitk_threads() -> int:
    try:
        import SimpleITK as sitk

        return int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
    except Exception:  # noqa: BLE001
        return 0


def _run_pool(todo: List[Scan], out: Path, data: Dict[str, Any], fp: Dict[str, Any],
              segment_fn: Optional[SegmentFn], jobs: int, threads: int, note: Callable[[Dict[str, Any]], None],
              outer: Callable[[float, str], bool], report: BatchReport, say: Callable[[str], None]) -> None:
    """Run ``todo`` on ``jobs`` spawned workers.

    A worker that dies (out of memory, crash) breaks the whole pool: the scans that were in flight are
    then rerun one at a time, each in a fresh single-worker pool, so only the scan that kills its
    worker again is reported failed; the others continue in a fresh parallel pool.
    """
    queue = list(todo)
    suspects: List[Scan] = []
    total = len(todo)
    finished_count = 0
    stop = False
    ctx = get_context("spawn")
    while (queue or suspects) and not stop:
        isolated = bool(suspects)
        batch = [suspects.pop(0)] if isolated else queue
        width = 1 if isolated else min(jobs, len(queue))
        pool = ProcessPoolExecutor(max_workers=width, mp_context=ctx, initializer=_worker_init,
                                   initargs=(threads, data if segment_fn is None else None))
        running: Dict[Future, Scan] = {}
        crashed: List[Scan] = []
        try:
            while batch or running:
                while batch and len(running) < width and not stop:
                    scan = batch.pop(0)
                    running[pool.submit(_worker, scan, str(out), data, fp, segment_fn, os.getpid())] = scan
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    scan = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        crashed.append(scan)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
                        result = {"key": scan.relpath, "status": "failed", "error": _message(exc)}
                        _record_crash(scan, out, fp, result["error"])
                    note(result)
                    finished_count += 1
                    if not outer(finished_count / total, f"{scan.participant_id} {result['status']}"):
                        stop = True
                if crashed:
                    crashed.extend(running.values())  # in flight when the pool broke: rerun them alone
                    running.clear()
                    break
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
        if crashed and isolated:
            message = "the worker process died on this scan (out of memory or a crash)"
            _record_crash(crashed[0], out, fp, message)
            note({"key": crashed[0].relpath, "status": "failed", "error": message})
            finished_count += 1
            if not outer(finished_count / total, f"{crashed[0].participant_id} failed"):
                stop = True
        elif crashed:
            say(f"a worker process died; rerunning the {len(crashed)} scan(s) it had in flight one at a time")
            suspects.extend(crashed)
    if stop:
        report.not_run.extend(s.relpath for s in suspects + queue)


def _record_crash(scan: Scan, out: Path, fp: Dict[str, Any], message: str) -> None:
    outputs = derivative_paths(scan, out)
    _clear(outputs)
    try:
        _write_atomic(outputs.error, json.dumps({"source": scan.relpath, "status": "failed", "error": message,
                                                 "version": __version__, "fingerprint": fp}, indent=1) + "\n")
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------
# Group level: the table
# --------------------------------------------------------------------------------------------------


def _number(value: Any, decimals: int) -> Optional[str]:
    """Plain positional decimal (no exponent, no trailing zeros) or None for missing/non-finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    text = f"{round(x, decimals):.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value)
    text = " ".join(str(value).split())  # no tabs or newlines inside a cell
    return text.replace('"', "'") or None


def table_row(scan: Scan, status: str, record: Dict[str, Any], reason: str) -> Dict[str, Optional[str]]:
    """One row of the volumes table (strings, None = missing) from a scan's record."""
    summary = record.get("summary", {}) if status == "ok" else {}
    volumes = summary.get("volumes_mm3") or {}
    per_etiv = summary.get("volumes_per_etiv") or {}
    qc = summary.get("qc") or {}
    sides = qc.get("sides") or {}
    settings = summary.get("settings") or {}
    fp = record.get("fingerprint") or {}
    raw: Dict[str, Any] = {
        "participant_id": scan.participant_id,
        "session_id": scan.session_id,
        "source": scan.relpath,
        "status": status,
        "right_mm3": volumes.get("right"),
        "left_mm3": volumes.get("left"),
        "etiv_mm3": summary.get("etiv_mm3"),
        "right_per_etiv": per_etiv.get("right"),
        "left_per_etiv": per_etiv.get("left"),
        "asymmetry_index": summary.get("asymmetry_index"),
        "quality": qc.get("quality"),
        "quality_right": (sides.get("right") or {}).get("quality"),
        "quality_left": (sides.get("left") or {}).get("quality"),
        "reasons_right": (sides.get("right") or {}).get("reasons"),
        "reasons_left": (sides.get("left") or {}).get("reasons"),
        "qc_warnings": qc.get("warnings") if status == "ok" else None,
        "model": settings.get("model", fp.get("model")),
        "coding": settings.get("coding_used", fp.get("coding")),
        "timesteps": settings.get("timesteps_used", fp.get("timesteps")),
        "threshold": settings.get("threshold", fp.get("threshold")),
        "seed": settings.get("seed", fp.get("seed")),
        "seconds": record.get("seconds"),
        "model_sha256": summary.get("model_sha256", fp.get("model_sha256")),
        "error": reason if status != "ok" else None,
    }
    if raw["model"] == "ann":
        raw["timesteps"] = None  # the ANN has no timesteps: n/a rather than a number that was not used
    row: Dict[str, Optional[str]] = {}
    for column in COLUMNS:
        value = raw[column]
        row[column] = _number(value, _DECIMALS[column]) if column in _DECIMALS else _text(value)
    return row


@dataclass
class GroupReport:
    tsv: Path
    csv: Path
    rows: List[Dict[str, Optional[str]]]

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.rows)


def write_group_table(
    bids_dir: PathLike,
    output_dir: PathLike,
    participant_labels: Optional[Iterable[str]] = None,
    session_labels: Optional[Iterable[str]] = None,
    validate: bool = True,
) -> GroupReport:
    """Write ``OUTPUT_DIR/hipposnn_volumes.tsv`` (BIDS: tab-separated, ``n/a`` for missing) and ``.csv``
    (comma-separated, empty cell for missing: what R's ``read.csv`` and pandas read as NA without
    options) with one row per selected scan, whatever shard produced it."""
    scans = discover(bids_dir, participant_labels, session_labels, validate)
    out = Path(output_dir).expanduser()
    if not out.is_dir():
        raise HippoSNNError(f"OUTPUT_DIR not found: {out} (run the participant level first)")
    rows = [table_row(scan, *read_record(scan, out)) for scan in scans]
    tsv_buf = io.StringIO()
    tsv_buf.write("\t".join(COLUMNS) + "\n")
    for row in rows:
        tsv_buf.write("\t".join("n/a" if row[c] is None else str(row[c]) for c in COLUMNS) + "\n")
    csv_buf = io.StringIO()
    writer = csv.writer(csv_buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    tsv_path, csv_path = out / f"{TABLE_NAME}.tsv", out / f"{TABLE_NAME}.csv"
    try:
        _write_atomic(tsv_path, tsv_buf.getvalue())
        _write_atomic(csv_path, csv_buf.getvalue())
    except OSError as exc:
        raise HippoSNNError(f"cannot write the table in {out}: {exc.strerror or exc}") from None
    return GroupReport(tsv_path, csv_path, rows)
