"""hippodeep (Thyreau et al. 2018) side by side with HippoSNN on the labelled whole-brain sets.

hippodeep is not on the package registry and is never vendored here: get a checkout of the public
repository (MIT licence, weights included) and pass its path::

    git clone https://github.com/bthyreau/hippodeep_pytorch /path/to/hippodeep_pytorch
    python bench/bench_hippodeep.py --hippodeep /path/to/hippodeep_pytorch              # both tools, all sets
    python bench/bench_hippodeep.py --hippodeep PATH --tools hippodeep --limit 2        # a quick look
    python bench/bench_hippodeep.py --hippodeep PATH --tools hipposnn --resume          # add HippoSNN later

hippodeep needs torch, nibabel and scipy (the CPU torch that HippoSNN uses is enough). Each tool runs
on each scan in a fresh process, one scan at a time, with ``--threads`` (default 2) torch threads
(hippodeep hard-codes 4: a small wrapper pins torch to ``--threads`` before running its script
unchanged). The time is the wall time of the whole command (Python start-up, imports, reading,
writing). hippodeep writes ``<name>_mask_L.nii.gz`` / ``_mask_R.nii.gz`` next to its input (the input
is linked into a scratch folder): uint8 probability x 255 in the input grid, thresholded here at 0.5
(>= 128); its own volumes (a soft sum) and eTIV come from ``<name>_hippoLR_volumes.csv``. HippoSNN
runs ``hipposnn segment --json`` with its default settings. Both are scored against the same labels
with ``tools/eval_sets.py``'s functions (Dice, volume ratio, centroid offsets).

Outputs (``--out``, default docs/results/hippodeep_bench/): ``raw.json`` (every run, its load average
and the commits; rewritten atomically after each run, so ``--resume`` continues), ``table.md`` and
``table.csv`` (per set and tool: Dice mean / median / min, failures, volume ratio, lateral offset,
seconds per scan, and the speed ratio HippoSNN / hippodeep over the scans both ran in the same
invocation: runs added later with ``--resume`` are scored but not paired for speed).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from hipposnn.atomicio import atomic_write_text
from hipposnn.options import MODEL_CHOICES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import eval_sets as ev  # noqa: E402  (tools/eval_sets.py: case lists and scoring)

DEFAULT_OUT = ROOT / "docs" / "results" / "hippodeep_bench"
TOOLS = ("hippodeep", "hipposnn")
# Runs hippodeep.py unchanged, with torch pinned to argv[1] threads (the script calls set_num_threads(4)).
HIPPODEEP_WRAPPER = (
    "import runpy, sys, torch; torch.set_num_threads(int(sys.argv[1])); "
    "torch.set_num_threads = lambda *a, **k: None; sys.argv = sys.argv[2:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
HIPPOSNN_CMD = "from hipposnn.cli import entry; entry()"
MASK_THRESHOLD = 128  # hippodeep masks are uint8 probability x 255: >= 128 is p >= 0.5


def sha256(path: Path) -> Optional[str]:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hippodeep_info(path: Path) -> Dict[str, Any]:
    """Which hippodeep ran: its git commit when the path is a clone, and the hashes of script and weights."""
    import subprocess

    commit = None
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    weights = sorted((path / "torchparams").glob("*.pt")) if (path / "torchparams").is_dir() else []
    return {"path": str(path), "git_commit": commit, "hippodeep.py_sha256": sha256(path / "hippodeep.py"),
            "weights_sha256": {w.name: sha256(w) for w in weights}}


def _stem(name: str) -> str:
    """hippodeep's output stem of an input file name (it replaces .mgz/.nii.gz/.nii)."""
    for suffix in (".nii.gz", ".nii", ".mgz", ".mnc"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _tail(text: str, n: int = 600) -> str:
    return text[-n:] if text else ""


def run_hippodeep(case: ev.Case, checkout: Path, threads: int, work: Path) -> Dict[str, Any]:
    """One fresh hippodeep process on the case; returns wall time, exit code and the output paths."""
    import subprocess

    source = Path(case.image)
    link = work / source.name
    link.symlink_to(source)
    cmd = [sys.executable, "-c", HIPPODEEP_WRAPPER, str(threads), str(checkout / "hippodeep.py"), link.name]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=ev.thread_env(threads), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    stem = _stem(source.name)
    out = {"seconds": round(seconds, 2), "exit": proc.returncode,
           "masks": {"right": work / f"{stem}_mask_R.nii.gz", "left": work / f"{stem}_mask_L.nii.gz"}}
    csv_path = work / f"{stem}_hippoLR_volumes.csv"
    if csv_path.is_file():
        try:
            rows = list(csv.DictReader(csv_path.read_text().splitlines()))
            out["etiv_mm3"] = float(rows[0]["eTIV"])
            out["own_volumes_mm3"] = {"right": float(rows[0]["hippoR"]), "left": float(rows[0]["hippoL"])}
        except (KeyError, IndexError, ValueError):
            pass
    if proc.returncode != 0 or not all(p.is_file() for p in out["masks"].values()):
        out["error"] = _tail(proc.stderr or proc.stdout) or "no masks written"
    return out


def run_hipposnn(case: ev.Case, threads: int, work: Path, model: str, coding: str | None) -> Dict[str, Any]:
    """One fresh ``hipposnn segment --json`` process on the case."""
    import subprocess

    cmd = [sys.executable, "-c", HIPPOSNN_CMD, "segment", case.image, "-o", str(work), "--quiet", "--json",
           "--model", model]
    if coding:
        cmd += ["--coding", coding]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=ev.thread_env(threads), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    labels = sorted(work.glob("*_hippo_labels*"))
    summaries = sorted(work.glob("*_hippo.json"))
    out: Dict[str, Any] = {"seconds": round(seconds, 2), "exit": proc.returncode,
                           "labels_file": labels[0] if labels else None}
    if summaries:
        summary = json.loads(summaries[0].read_text())
        qc = summary.get("qc") or {}
        out["etiv_mm3"] = summary.get("etiv_mm3")
        out["own_volumes_mm3"] = summary.get("volumes_mm3")
        out["quality"] = qc.get("quality")
        out["timings_s"] = summary.get("timings_s")  # the pipeline's own steps (model, registration, ...)
        out["side_quality"] = {s: ((qc.get("sides") or {}).get(s) or {}).get("quality") or qc.get("quality")
                               for s in ev.SIDES}
    if proc.returncode != 0 or not labels:
        out["error"] = _tail(proc.stderr or proc.stdout) or "no labels written"
    return out


def score_run(tool: str, raw_run: Dict[str, Any], case: ev.Case) -> Dict[str, Any]:
    """Score a tool's output against the case's labels (same functions as tools/eval_sets.py)."""
    import nibabel as nib

    truth, affine = ev.load_labels(case.labels)
    rec: Dict[str, Any] = {k: v for k, v in raw_run.items() if k not in ("masks", "labels_file")}
    for side in ev.SIDES:
        value, other = (case.right, case.left) if side == "right" else (case.left, case.right)
        t = truth == value
        pred = None
        if "error" not in raw_run:
            if tool == "hippodeep":
                pred = np.asarray(nib.load(str(raw_run["masks"][side])).dataobj) >= MASK_THRESHOLD
            else:
                pred = np.rint(np.asarray(nib.load(str(raw_run["labels_file"])).dataobj)) == ev.OUR_LABELS[side]
            while pred.ndim > 3:
                pred = pred[..., 0]
            if pred.shape != t.shape:
                rec["error"] = f"{side} output {pred.shape} is not on the label grid {t.shape}"
                pred = None
        if pred is None:
            rec[side] = ev.failed_hemisphere(t, affine, rec.get("error", "no output"))
            rec[side]["quality"] = "error"
        else:
            rec[side] = ev.score_hemisphere(pred, t, truth == other, affine)
            if tool == "hipposnn":
                rec[side]["quality"] = (raw_run.get("side_quality") or {}).get(side)
    return rec


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------

COLUMNS = ["set", "tool", "cases", "hemispheres", "dice_mean", "dice_median", "dice_min", "failures",
           "volume_ratio_mean", "volume_ratio_median", "lateral_offset_mm_mean", "centroid_offset_r_mean",
           "centroid_offset_a_mean", "centroid_offset_s_mean", "seconds_mean", "seconds_median", "load1_mean",
           "speed_ratio_median", "paired_cases"]


def summarise(raw: Dict[str, Any], order: Sequence[str]) -> List[Dict[str, Any]]:
    """Rows per set and tool; ``speed_ratio_median``: median over scans run by both of HippoSNN s / hippodeep s."""
    by_set: Dict[str, List[Dict[str, Any]]] = {}
    for rec in raw["cases"].values():
        by_set.setdefault(rec["set"], []).append(rec)
    names = [s for s in order if s in by_set] + sorted(s for s in by_set if s not in order)
    groups = []
    for name in names:
        protocols = sorted({r["protocol"] for r in by_set[name]})
        groups.append((name, by_set[name]))
        if len(protocols) > 1:  # wholebrain: FreeSurfer aseg and AAL get their own rows too
            groups.extend((f"{name} [{p}]", [r for r in by_set[name] if r["protocol"] == p]) for p in protocols)
    rows = []
    for name, recs in groups:
        # the speed ratio only pairs runs of one invocation (same machine state); --resume can mix invocations
        paired = [r for r in recs if all(t in r and "error" not in r[t] for t in TOOLS)
                  and r["hippodeep"].get("run") == r["hipposnn"].get("run")]
        ratios = [r["hipposnn"]["seconds"] / r["hippodeep"]["seconds"] for r in paired]
        for tool in TOOLS:
            runs = [dict(r[tool], set=r["set"], protocol=r["protocol"]) for r in recs if tool in r]
            if not runs:
                continue
            row = ev.summarise_group(name, " + ".join(sorted({r["protocol"] for r in recs})), runs)
            row["tool"] = tool
            row["speed_ratio_median"] = round(float(np.median(ratios)), 3) if ratios else None
            row["paired_cases"] = len(paired)
            rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    return ev._fmt(v)


def table_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["| set | tool | cases | Dice mean / median / min | failures (Dice < 0.5) | volume ratio mean / median "
             "| lateral offset mm | s per scan mean / median | load | HippoSNN / hippodeep time (median, same run) |",
             "|" + "---|" * 10]
    for r in rows:
        ratio = f"{_fmt(r['speed_ratio_median'])} ({r['paired_cases']} scans)" if r["speed_ratio_median"] else "-"
        lines.append(
            f"| {r['set']} | {r['tool']} | {r['cases']} "
            f"| {_fmt(r['dice_mean'])} / {_fmt(r['dice_median'])} / {_fmt(r['dice_min'])} "
            f"| {r['failures']} of {r['hemispheres']} | {_fmt(r['volume_ratio_mean'])} / "
            f"{_fmt(r['volume_ratio_median'])} | {_fmt(r['lateral_offset_mm_mean'])} "
            f"| {_fmt(r['seconds_mean'])} / {_fmt(r['seconds_median'])} | {_fmt(r['load1_mean'])} | {ratio} |")
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def write_outputs(raw: Dict[str, Any], out: Path, order: Sequence[str]) -> List[Dict[str, Any]]:
    rows = summarise(raw, order)
    raw["table"] = rows
    atomic_write_text(out / "raw.json", json.dumps(raw, indent=1, default=str) + "\n")
    meta = raw["meta"]
    header = (f"<!-- bench/bench_hippodeep.py {' '.join(meta['argv'])} | HippoSNN commit {meta['git']['commit']} | "
              f"hippodeep {meta['hippodeep'].get('git_commit') or meta['hippodeep'].get('hippodeep.py_sha256')} | "
              f"{meta['started']} .. {meta.get('finished', 'running')} | load {meta['load_start']} .. "
              f"{meta.get('load_end')} on {meta['machine']['cpu_count']} cores -->\n")
    atomic_write_text(out / "table.md", header + table_markdown(rows))
    atomic_write_text(out / "table.csv", table_csv(rows))
    return rows


def run(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippodeep", type=Path, default=None,
                        help="path of a hippodeep_pytorch checkout (needed unless --tools hipposnn)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    parser.add_argument("--sets", nargs="+", default=None, help="default: all labelled sets")
    parser.add_argument("--limit", type=int, default=None, help="first N cases of each set")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="snn", help="HippoSNN model")
    parser.add_argument("--coding", choices=("binary", "ternary"), default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each tool (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", type=Path, default=None, help="keep every tool's outputs under this folder")
    parser.add_argument("--resume", action="store_true", help="keep runs already in OUT/raw.json")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from OUT/raw.json")
    args = parser.parse_args(argv)
    if args.report:
        raw = json.loads((args.out / "raw.json").read_text())
        rows = write_outputs(raw, args.out, list(raw["meta"].get("sets", {})))
        print(table_markdown(rows))
        return raw

    checkout = args.hippodeep.expanduser().resolve() if args.hippodeep else None
    if "hippodeep" in args.tools and (checkout is None or not (checkout / "hippodeep.py").is_file()):
        raise SystemExit("--hippodeep must point at a hippodeep_pytorch checkout (with hippodeep.py): "
                         "git clone https://github.com/bthyreau/hippodeep_pytorch")
    cases = ev.list_cases(args.data, args.sets, args.limit)
    order = list(cases)
    raw_path = args.out / "raw.json"
    raw: Dict[str, Any] = {"meta": {}, "cases": {}}
    if args.resume and raw_path.is_file():
        raw = json.loads(raw_path.read_text())
        raw.setdefault("runs", []).append({k: raw["meta"].get(k) for k in ("started", "finished", "git", "argv",
                                                                            "load_start", "load_end", "tools")})
    raw["meta"] = {
        "tool": "bench/bench_hippodeep.py", "argv": list(sys.argv[1:] if argv is None else argv), "started": now(),
        "git": ev.git_state(), "machine": ev.machine(), "load_start": ev.load_stats(), "tools": args.tools,
        "threads": args.threads, "hipposnn": {"model": args.model, "coding": args.coding},
        "hippodeep": hippodeep_info(checkout) if checkout else {}, "mask_threshold": MASK_THRESHOLD,
        "sets": {name: len(c) for name, c in cases.items()},
        "notes": "seconds: wall time of the whole command in a fresh process (one scan at a time); "
                 "load: os.getloadavg() before each run",
    }
    todo = [(c, t) for name in order for c in cases[name] for t in args.tools
            if t not in raw["cases"].get(c.key, {})]
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="bench", unit="run", file=sys.stderr, dynamic_ncols=True)
    flip = False
    for name in order:
        for case in cases[name]:
            tools = [t for t in args.tools if t not in raw["cases"].get(case.key, {})]
            if flip:  # alternate which tool goes first, so neither always meets the other's after-effects
                tools = tools[::-1]
            flip = not flip
            for tool in tools:
                entry = raw["cases"].setdefault(case.key, {"set": case.set, "id": case.id, "protocol": case.protocol,
                                                           "image": case.image, "labels": case.labels})
                load_before = ev.load_stats()
                with tempfile.TemporaryDirectory(prefix=f"bench_{tool}_") as tmp:
                    work = Path(tmp)
                    if args.keep:
                        work = args.keep / tool / case.set / case.id
                        work.mkdir(parents=True, exist_ok=True)
                        for old in work.iterdir():
                            if old.is_file() or old.is_symlink():
                                old.unlink()
                    if tool == "hippodeep":
                        result = run_hippodeep(case, checkout, args.threads, work)  # type: ignore[arg-type]
                    else:
                        result = run_hipposnn(case, args.threads, work, args.model, args.coding)
                    rec = score_run(tool, result, case)
                rec["load_before"], rec["load_after"] = load_before, ev.load_stats()
                rec["run"] = raw["meta"]["started"]
                entry[tool] = rec
                raw["meta"]["load_end"] = ev.load_stats()
                write_outputs(raw, args.out, order)
                d = "/".join(_fmt(rec[s].get("dice")) for s in ev.SIDES)
                bar.set_postfix_str(f"{tool} {case.key} Dice R/L {d} {rec['seconds']:.1f}s")
                bar.update(1)
    bar.close()
    raw["meta"]["finished"] = now()
    raw["meta"]["load_end"] = ev.load_stats()
    rows = write_outputs(raw, args.out, order)
    print(table_markdown(rows))
    print(f"raw: {raw_path}\ntable: {args.out / 'table.md'}, {args.out / 'table.csv'}")
    return raw


def now() -> str:
    return ev.now()


def main() -> None:
    run()


if __name__ == "__main__":
    main()
