"""Would smoothing the network's probability map before thresholding help? Scored on MSD crops (issue 14).

Why: at T = 8 a spiking U-Net's readout is a sum of eight spike-driven steps, so neighbouring voxels carry
noisy, coarsely quantised probabilities, and a small Gaussian over the ROI grid might recover some Dice the
way it does not need to for an ANN. This probe predicts each crop once and thresholds the map at 0.5 as is
and after a Gaussian of each ``--sigmas`` (voxels of the 1 mm grid; SimpleITK's DiscreteGaussian, the
library the product would use), for

* every fold of a recipe CV run: the fine-tuned SNN (``finetune_T<T>``) and its quantised ANN, on the fold's
  own test crops (``--run``), and
* shipped model files on the held-out validation crops of the final split (``--model FILE T CODING``).

``--wholebrain SIGMA`` instead runs the whole-brain evaluation (``tools/eval_sets.py``, its arguments after
``--``) with every ROI probability map the pipeline thresholds (the SNN's and its QC twin's) smoothed by
SIGMA first: the probe wraps ``hipposnn.inference._predict`` in this process only. Nothing in the package
changes; the verdict is in docs/models.md.

    python tools/probe_readout_smoothing.py --run runs/lowt_cv_binary_relu_kd_thick6 --coding binary \
        --model HippoSNN/hipposnn/models/hipposnn_snn_t8_binary.pt 8 binary --json docs/results/readout_smoothing.json
    python tools/probe_readout_smoothing.py --wholebrain 1.0 -- --model snn-t8 --coding binary --no-figure \
        --out docs/results/readout_smoothing/wholebrain_sigma1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HippoSNN"))
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from hipposnn.atomicio import atomic_write_text  # noqa: E402
from hipposnn.data import build_slices, from_slices, load_cases  # noqa: E402
from hipposnn.metrics import dice  # noqa: E402
from hipposnn.pipeline import split_names  # noqa: E402
from hipposnn.simulate import predict_slices  # noqa: E402
from hipposnn.weights import load_model  # noqa: E402
from lowt_cv_input_swap import fold_folders  # noqa: E402


def smooth(prob: np.ndarray, sigma: float) -> np.ndarray:
    """``prob`` after a Gaussian of ``sigma`` voxels (unchanged for 0)."""
    if sigma <= 0:
        return prob
    image = sitk.GetImageFromArray(prob.astype(np.float32))
    return sitk.GetArrayFromImage(sitk.DiscreteGaussian(image, float(sigma) ** 2, 32, 0.01, False))


def dice_by_sigma(model: Any, data: Path, names: Sequence[str], timesteps: int, coding: str,
                  sigmas: Sequence[float]) -> Dict[str, List[float]]:
    """Per sigma, the 3D Dice of every case (thresholded at 0.5, as ``hipposnn evaluate`` does)."""
    cases = load_cases(data, names)
    slices = build_slices(cases, coding, model.spec.context)
    probs = predict_slices(model, slices.images, timesteps=timesteps, coding=coding, seed=0, batch_size=24)
    out: Dict[str, List[float]] = {str(s): [] for s in sigmas}
    for i in range(len(slices.names)):
        sel = slices.case_index == i
        prob, truth = from_slices(probs[sel]), from_slices(slices.labels[sel] > 0.5)
        for s in sigmas:
            out[str(s)].append(dice(smooth(prob, s) >= 0.5, truth))
    return out


def summary(per_case: Dict[str, List[float]]) -> Dict[str, float]:
    return {s: round(float(np.mean(v)), 4) for s, v in per_case.items()}


def run_wholebrain(sigma: float, eval_args: List[str]) -> int:
    """tools/eval_sets.py with every ROI probability map smoothed by ``sigma`` voxels before thresholding."""
    import eval_sets
    import hipposnn.inference as inference

    predict = inference._predict

    def smoothed(*args: Any, **kwargs: Any) -> List[np.ndarray]:
        return [smooth(p, sigma) for p in predict(*args, **kwargs)]

    inference._predict = smoothed
    try:
        record = eval_sets.run(eval_args)
    finally:
        inference._predict = predict
    out = Path(eval_args[eval_args.index("--out") + 1])
    # eval_sets' own header names only its arguments: say beside its outputs what changed them
    atomic_write_text(out / "probe.json", json.dumps({
        "tool": "tools/probe_readout_smoothing.py", "argv": ["--wholebrain", str(sigma), "--", *eval_args],
        "sigma_voxels": sigma, "what": "every ROI probability map (the SNN's and its QC twin's) smoothed before "
        "thresholding", "eval_started": record["meta"]["started"]}, indent=1))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--wholebrain" in argv:
        split = argv.index("--") if "--" in argv else len(argv)
        ours, theirs = argv[:split], argv[split + 1:]
        if len(ours) != 2 or ours[0] != "--wholebrain" or "--out" not in theirs:
            print("usage: probe_readout_smoothing.py --wholebrain SIGMA -- EVAL_SETS_ARGS (with --out)",
                  file=sys.stderr)
            return 2
        return run_wholebrain(float(ours[1]), theirs)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    ap.add_argument("--run", type=Path, help="recipe CV run (CODING/fold_K/{ann,finetune_T<T>}/best.pt)")
    ap.add_argument("--coding", default="binary", help="the run's coding")
    ap.add_argument("--trained-t", type=int, default=8)
    ap.add_argument("--model", action="append", nargs=3, default=[], metavar=("FILE", "T", "CODING"),
                    help="a model file, the T to run it at (ANN: 1) and its coding, scored on the validation crops")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 1.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    if not args.run and not args.model:
        ap.error("give --run and/or --model")
    torch.set_num_threads(args.threads)
    record: Dict[str, Any] = {"tool": "tools/probe_readout_smoothing.py", "argv": argv,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "load_start": list(os.getloadavg()), "sigmas_voxels": args.sigmas, "cv": {},
                              "validation": {}}
    if args.run:
        stage = f"finetune_T{args.trained_t}"
        pooled: Dict[str, Dict[str, List[float]]] = {"snn": {}, "ann": {}}
        for fold in fold_folders(args.run, args.coding, stage):
            names = json.loads((fold / stage / "result.json").read_text())["test_cases"]
            models = (("snn", fold / stage / "best.pt", args.trained_t), ("ann", fold / "ann" / "best.pt", 1))
            for key, path, t in models:
                per_case = dice_by_sigma(load_model(path), args.data, names, t, args.coding, args.sigmas)
                record["cv"].setdefault(fold.name, {})[key] = summary(per_case)
                for s, values in per_case.items():
                    pooled[key].setdefault(s, []).extend(values)
                print(f"{fold.name} {key}: {record['cv'][fold.name][key]}", flush=True)
        record["cv"]["pooled"] = {key: summary(v) for key, v in pooled.items()}
        print(f"pooled: {record['cv']['pooled']}", flush=True)
    if args.model:
        names = split_names(args.data, None, 5, 0)[1]
        if not names:
            ap.error(f"{args.data}: too few cases for a validation split")
        for path, t, coding in args.model:
            if not t.isdigit() or int(t) < 1 or coding not in ("binary", "ternary"):
                ap.error(f"--model {path} {t} {coding}: expected FILE T binary|ternary")
            record["validation"][Path(path).name] = {
                "timesteps": int(t), "coding": coding,
                "dice_3d": summary(dice_by_sigma(load_model(path), args.data, names, int(t), coding, args.sigmas))}
            print(f"{Path(path).name}: {record['validation'][Path(path).name]['dice_3d']}", flush=True)
    record.update(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_end=list(os.getloadavg()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
