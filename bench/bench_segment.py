"""Time whole-brain segmentation step by step (registration, inference, total) against the targets.

The tests check what segmentation returns; how long it takes depends on the machine and its load, so
it is measured here, not asserted in a test. Each case runs in this process after one warm-up run
(which loads the model and the template), ``--repeats`` times; the best and median are reported.

    python bench/bench_segment.py                       # the FreeSurfer cases in ../shared/data/wholebrain
    python bench/bench_segment.py --threads 2 --repeats 3 --json out.json
    python bench/bench_segment.py --model snn-t8 --model snn-t32 --json out.json   # several models, same cases
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

os.environ.setdefault("HIPPOSNN_NATIVE", "wait")  # the fused kernels, compiled before any timing

from hipposnn.inference import SegmentationSettings, segment_image
from hipposnn.io import load_image
from hipposnn.options import MODEL_CHOICES

ROOT = Path(__file__).resolve().parents[1]
CASES = {"fst-sub-01": "T1.mgz", "fst-sub-02": "T1.mgz", "bert": "norm.mgz"}
#: Seconds on a 2-core CPU: registration and total (docs/segmentation.md); the network's time for both ROIs
#: of one scan with the default model (issue 14's low-latency target).
TARGETS = {"registration": 10.0, "inference": 0.5, "total": 10.0}


def find_cases(data: Path) -> Dict[str, Path]:
    """The FreeSurfer cases of :data:`CASES` found under ``data``; says so on stderr when there are none."""
    cases = {name: data / name / image for name, image in CASES.items() if (data / name / image).exists()}
    if not cases:
        print(f"no whole-brain cases under {data} (see ../shared/data/README)", file=sys.stderr)
    return cases


def finish_report(report: Dict[str, Any], json_path: str | None) -> None:
    """Stamp the load average after a benchmark into ``report`` (beside ``load_average_before``), print both and
    write the report to ``json_path`` if given: every committed timing carries the load it ran under."""
    report["load_average_after"] = os.getloadavg()
    print(f"load average {report['load_average_before'][0]:.2f} before, {report['load_average_after'][0]:.2f} after")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))


def time_case(path: Path, settings: SegmentationSettings, repeats: int) -> Dict[str, Dict[str, float]]:
    image = load_image(path)
    runs: List[Dict[str, float]] = [segment_image(image, settings).timings for _ in range(repeats)]
    return {step: {"best": min(r[step] for r in runs), "median": statistics.median(r[step] for r in runs)}
            for step in runs[0]}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wholebrain"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the timings here")
    parser.add_argument("--model", action="append", choices=MODEL_CHOICES,
                        help="shipped model(s) to time, one after the other (default: snn, the default SNN)")
    args = parser.parse_args(argv)
    cases = find_cases(Path(args.data))
    if not cases:
        return 1
    report: Dict[str, Any] = {"threads": args.threads, "models": {}}
    print(f"threads {args.threads}; seconds, best (median)")
    for model in args.model or ["snn"]:
        settings = SegmentationSettings(threads=args.threads, model=model)
        segment_image(load_image(next(iter(cases.values()))), settings)  # warm-up: model, template, caches
        load_before = os.getloadavg()[0]
        results = {name: time_case(path, settings, args.repeats) for name, path in cases.items()}
        load_after = os.getloadavg()[0]
        report["models"][model] = {"cases": results, "load_average_before": load_before,
                                   "load_average_after": load_after}
        print(f"model {model} (load average {load_before:.1f} before, {load_after:.1f} after)")
        for name, steps in results.items():
            cells = []
            for step, t in steps.items():
                flag = " over target" if step in TARGETS and t["best"] > TARGETS[step] else ""
                cells.append(f"{step} {t['best']:.2f} ({t['median']:.2f}){flag}")
            print(f"  {name:12s} " + ", ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
