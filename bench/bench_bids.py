"""Cohort throughput of ``hipposnn bids``: scans per minute for --jobs/--threads splits, and the overhead.

Builds a BIDS dataset in a temporary folder from the shared whole-brain cases (the MGZ files converted
to NIfTI, the NIfTI symlinked), then runs ``python -m hipposnn bids BIDS OUT participant`` in a fresh
process per configuration (``JOBSxTHREADS``, default ``1x2`` and ``2x1``: the two ways to use 2 cores),
each into an empty OUTPUT_DIR, with the default model unless ``--model`` says otherwise.

Reported per configuration: wall time of the whole command (Python start-up, imports, worker start,
model loading and all scans), scans per minute, and from the sidecars, per scan: registration and
inference (``timings_s``), and the overhead beyond them = the scan's seconds (read to sidecar written)
minus registration and inference (model loading on a worker's first scan, reading, normalising,
pasting back, writing, hashing). The machine's load average (``os.getloadavg``) before and after each
run goes into the JSON: the machine is shared, compare runs made at similar load.

    python bench/bench_bids.py                                 # 1x2 and 2x1, default model
    python bench/bench_bids.py --configs 1x2 2x1 1x1 --repeats 2 --json bids_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
CASES = {"fstsub01": "fst-sub-01/T1.mgz", "fstsub02": "fst-sub-02/T1.mgz", "bert": "bert/norm.mgz",
         "niivue": "niivue-subject/norm.mgz", "colin27": "colin27/ch2.nii.gz"}


def make_bids(data: Path, root: Path) -> int:
    """A BIDS dataset with one T1w per available case; returns the number of scans."""
    import nibabel as nib
    import numpy as np

    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "wholebrain", "BIDSVersion": "1.9.0"}))
    n = 0
    for label, rel in CASES.items():
        src = data / rel
        if not src.is_file():
            continue
        anat = root / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        target = anat / f"sub-{label}_T1w.nii.gz"
        if rel.endswith(".nii.gz"):
            os.symlink(src.resolve(), target)
        else:
            img = nib.load(str(src))
            nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), str(target))
        n += 1
    return n


def parse_config(text: str) -> Tuple[int, int]:
    jobs, _, threads = text.partition("x")
    return int(jobs), int(threads)


def run_config(bids: Path, out: Path, jobs: int, threads: int, extra: List[str]) -> Dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "hipposnn", "bids", str(bids), str(out), "participant", "--jobs", str(jobs),
           "--threads", str(threads), "--quiet", *extra]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    scans = []
    for sidecar in sorted(out.glob("sub-*/anat/*_dseg.json")):
        record = json.loads(sidecar.read_text())["HippoSNN"]
        t = record["summary"]["timings_s"]
        reg = t.get("registration", 0.0) + t.get("refine", 0.0)
        inf = t.get("inference", 0.0)
        scans.append({"scan": sidecar.name.split("_desc-")[0], "seconds": record["seconds"], "registration": reg,
                      "inference": inf, "model_load": t.get("model", 0.0), "read": t.get("read", 0.0),
                      "overhead": record["seconds"] - reg - inf})
    n = len(scans)
    overheads = [s["overhead"] for s in scans]
    # A worker's first scan also loads the model; the steady-state overhead leaves that out.
    steady = [s["overhead"] - s["model_load"] for s in scans]
    busy = sum(s["seconds"] for s in scans)
    return {
        "jobs": jobs, "threads": threads, "scans": n, "wall_s": round(wall, 2),
        "scans_per_minute": round(60.0 * n / wall, 2),
        "mean_scan_s": round(busy / n, 2),
        "mean_registration_s": round(statistics.mean(s["registration"] for s in scans), 2),
        "mean_inference_s": round(statistics.mean(s["inference"] for s in scans), 2),
        "overhead_per_scan_s": {"mean": round(statistics.mean(overheads), 3), "max": round(max(overheads), 3)},
        "overhead_without_model_load_s": {"mean": round(statistics.mean(steady), 3), "max": round(max(steady), 3)},
        "process_overhead_s": round(wall - busy / jobs, 2),  # start-up, imports, spawning workers, idle tail
        "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
        "per_scan": scans,
    }


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wholebrain"))
    parser.add_argument("--configs", nargs="+", default=["1x2", "2x1"], help="JOBSxTHREADS per run")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the configurations (interleaved)")
    parser.add_argument("--model", default=None, help="snn or ann (default: the command's default, snn)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    extra = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory(prefix="bench_bids_") as tmp:
        bids = Path(tmp) / "bids"
        n = make_bids(Path(args.data), bids)
        if n == 0:
            print(f"no whole-brain cases under {args.data} (see ../shared/data/README.md)", file=sys.stderr)
            return 1
        runs = []
        for _ in range(args.repeats):
            for config in args.configs:
                jobs, threads = parse_config(config)
                result = run_config(bids, Path(tmp) / "out", jobs, threads, extra)
                runs.append(result)
                print(f"jobs {jobs} x threads {threads}: {result['scans']} scans in {result['wall_s']:.1f} s = "
                      f"{result['scans_per_minute']:.2f} scans/min; per scan {result['mean_scan_s']:.2f} s "
                      f"(registration {result['mean_registration_s']:.2f}, inference {result['mean_inference_s']:.2f}"
                      f", overhead mean {result['overhead_per_scan_s']['mean']:.2f} / max "
                      f"{result['overhead_per_scan_s']['max']:.2f}, without model loading "
                      f"{result['overhead_without_model_load_s']['mean']:.2f}); process overhead "
                      f"{result['process_overhead_s']:.1f} s; load {result['load_before'][0]:.1f} -> "
                      f"{result['load_after'][0]:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_count": os.cpu_count(), "model": args.model or "snn",
                                               "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
