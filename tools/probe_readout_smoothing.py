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
import torch  # noqa: E402
from hipposnn.atomicio import atomic_write_text  # noqa: E402
from hipposnn.data import build_slices, from_slices, load_cases  # noqa: E402
from hipposnn.metrics import dice  # noqa: E402
from hipposnn.pipeline import split_names  # noqa: E402
from hipposnn.readout import gaussian as smooth  # noqa: E402
from hipposnn.readout import keep_volume, largest_component  # noqa: E402
from hipposnn.simulate import predict_slices  # noqa: E402
from hipposnn.weights import load_model  # noqa: E402
from lowt_cv_input_swap import fold_folders  # noqa: E402

VOLUME = "vol"  # a "threshold" that cuts the smoothed map where it keeps the raw mask's volume
LARGEST = "+lcc"  # suffix of a setting whose mask then keeps its largest connected component (the pipeline's)


def setting(sigma: float, threshold: object) -> str:
    """A result's key: the sigma alone at the pipeline's threshold (0.5), else ``sigma@threshold``."""
    return str(sigma) if threshold == 0.5 else f"{sigma}@{threshold}"


def describe(key: str) -> str:
    """The words for a result key of :func:`setting` (with ``--largest``'s suffix), as a model card cites it."""
    largest = key.endswith(LARGEST)
    sigma, _, cut = (key[: -len(LARGEST)] if largest else key).partition("@")
    where = "the raw mask's volume" if cut == VOLUME else (cut or "0.5")
    how = f"a Gaussian of {sigma} voxel cut at {where}"
    return how + (", then the mask's largest connected component" if largest else "")


def dice_by_sigma(model: Any, data: Path, names: Sequence[str], timesteps: int, coding: str,
                  sigmas: Sequence[float], thresholds: Sequence[float] = (0.5,),
                  volume: bool = False, largest: bool = False) -> Dict[str, List[float]]:
    """Per sigma and threshold, the 3D Dice of every case (0.5 is what ``hipposnn evaluate`` thresholds at);
    with ``volume``, also each sigma > 0 at constant volume (``hipposnn.readout.smooth_readout``'s cut at 0.5);
    with ``largest``, also every such setting with the mask's largest connected component only (key + ``+lcc``),
    as the segmentation pipeline pastes it."""
    cases = load_cases(data, names)
    slices = build_slices(cases, coding, model.spec.context)
    probs = predict_slices(model, slices.images, timesteps=timesteps, coding=coding, seed=0, batch_size=24)
    out: Dict[str, List[float]] = {}

    def score(key: str, mask: np.ndarray, truth: np.ndarray) -> None:
        out.setdefault(key, []).append(dice(mask, truth))
        if largest:
            out.setdefault(key + LARGEST, []).append(dice(largest_component(mask), truth))

    for i in range(len(slices.names)):
        sel = slices.case_index == i
        prob, truth = from_slices(probs[sel]), from_slices(slices.labels[sel] > 0.5)
        raw_voxels = int(np.count_nonzero(prob > 0.5))
        for s in sigmas:
            smoothed = smooth(prob, s)
            for t in thresholds:
                score(setting(s, t), smoothed >= t, truth)
            if volume and s > 0:  # the pipeline's step on the map just smoothed; an empty raw mask stays empty
                cut = keep_volume(smoothed, raw_voxels, 0.5) > 0.5 if raw_voxels else prob > 0.5
                score(setting(s, VOLUME), cut, truth)
    return out


def choose_on_validation(validation: Dict[str, float], test: Dict[str, float]) -> Dict[str, Any]:
    """The setting with the best pooled validation Dice, and its test Dice beside the raw map's (0.0 at 0.5)."""
    best = max(validation, key=lambda k: (validation[k], k == "0.0"))
    return {"setting": best, "validation": validation[best], "test": test[best],
            "raw_validation": validation.get("0.0"), "raw_test": test.get("0.0")}


def summary(per_case: Dict[str, List[float]]) -> Dict[str, float]:
    return {s: round(float(np.mean(v)), 4) for s, v in per_case.items()}


def run_wholebrain(sigma: float, eval_args: List[str], threshold: float = 0.5) -> int:
    """tools/eval_sets.py with every ROI probability map smoothed by ``sigma`` voxels before thresholding.

    A ``threshold`` other than the pipeline's 0.5 is emulated by shifting the smoothed map by 0.5 - threshold
    (clipped to 0..1), so the pipeline's 0.5 cuts it where ``threshold`` would cut the smoothed map.
    """
    import eval_sets
    import hipposnn.inference as inference

    predict = inference._predict
    shift = 0.5 - threshold

    def smoothed(*args: Any, **kwargs: Any) -> List[np.ndarray]:
        maps = [smooth(p, sigma) for p in predict(*args, **kwargs)]
        return [np.clip(m + shift, 0.0, 1.0) for m in maps] if shift else maps

    inference._predict = smoothed
    try:
        record = eval_sets.run(eval_args)
    finally:
        inference._predict = predict
    out = Path(eval_args[eval_args.index("--out") + 1])
    # eval_sets' own header names only its arguments: say beside its outputs what changed them
    atomic_write_text(out / "probe.json", json.dumps({
        "tool": "tools/probe_readout_smoothing.py",
        "argv": ["--wholebrain", str(sigma), *([str(threshold)] if shift else []), "--", *eval_args],
        "sigma_voxels": sigma, "threshold": threshold, "what": "every ROI probability map (the SNN's and its QC "
        "twin's) smoothed before thresholding", "eval_started": record["meta"]["started"]}, indent=1))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--wholebrain" in argv:
        split = argv.index("--") if "--" in argv else len(argv)
        ours, theirs = argv[:split], argv[split + 1:]
        if len(ours) not in (2, 3) or ours[0] != "--wholebrain" or "--out" not in theirs:
            print("usage: probe_readout_smoothing.py --wholebrain SIGMA [THRESHOLD] -- EVAL_SETS_ARGS (with --out)",
                  file=sys.stderr)
            return 2
        return run_wholebrain(float(ours[1]), theirs, float(ours[2]) if len(ours) == 3 else 0.5)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    ap.add_argument("--run", type=Path, help="recipe CV run (CODING/fold_K/{ann,finetune_T<T>}/best.pt)")
    ap.add_argument("--coding", default="binary", help="the run's coding")
    ap.add_argument("--trained-t", type=int, default=8)
    ap.add_argument("--model", action="append", nargs=3, default=[], metavar=("FILE", "T", "CODING"),
                    help="a model file, the T to run it at (ANN: 1) and its coding, scored on the validation crops")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 1.0])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5],
                    help="thresholds on the (smoothed) probability; the pipeline's is 0.5")
    ap.add_argument("--volume", action="store_true",
                    help="also cut each smoothed map where it keeps the raw mask's volume (the pipeline's step)")
    ap.add_argument("--largest", action="store_true",
                    help="also score every setting with the mask's largest connected component only (the pipeline's)")
    ap.add_argument("--validation", action="store_true",
                    help="with --run, also score each fold's validation crops and choose the setting on them")
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
        pooled: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
        for fold in fold_folders(args.run, args.coding, stage):
            names = json.loads((fold / stage / "result.json").read_text())["test_cases"]
            val_names = []
            if args.validation:
                fold_index = int(fold.name.split("_")[1])
                _, val_names, test_names = split_names(args.data, fold_index, 5, 0)
                if sorted(test_names) != sorted(names):
                    raise SystemExit(f"{fold}: its test crops are not fold {fold_index}'s of 5 (seed 0)")
            models = (("snn", fold / stage / "best.pt", args.trained_t), ("ann", fold / "ann" / "best.pt", 1))
            for key, path, t in models:
                model = load_model(path)
                for part, part_names in (("cv", names), ("cv_validation", val_names)):
                    if not part_names:
                        continue
                    per_case = dice_by_sigma(model, args.data, part_names, t, args.coding, args.sigmas,
                                             args.thresholds, args.volume, args.largest)
                    record.setdefault(part, {}).setdefault(fold.name, {})[key] = summary(per_case)
                    for s, values in per_case.items():
                        pooled.setdefault(part, {}).setdefault(key, {}).setdefault(s, []).extend(values)
                    print(f"{part} {fold.name} {key}: {record[part][fold.name][key]}", flush=True)
        for part, by_key in pooled.items():
            record[part]["pooled"] = {key: summary(v) for key, v in by_key.items()}
            print(f"{part} pooled: {record[part]['pooled']}", flush=True)
        if args.validation:
            record["chosen_on_validation"] = {
                key: choose_on_validation(record["cv_validation"]["pooled"][key], record["cv"]["pooled"][key])
                for key in record["cv"]["pooled"]}
            print(f"chosen on validation: {record['chosen_on_validation']}", flush=True)
    if args.model:
        names = split_names(args.data, None, 5, 0)[1]
        if not names:
            ap.error(f"{args.data}: too few cases for a validation split")
        names_of = [Path(path).name for path, _, _ in args.model]
        for path, t, coding in args.model:
            if not t.isdigit() or int(t) < 1 or coding not in ("binary", "ternary"):
                ap.error(f"--model {path} {t} {coding}: expected FILE T binary|ternary")
            key = Path(path).name if names_of.count(Path(path).name) == 1 else path  # two best.pt: their paths
            record["validation"][key] = {
                "timesteps": int(t), "coding": coding,
                "dice_3d": summary(dice_by_sigma(load_model(path), args.data, names, int(t), coding, args.sigmas,
                                                 args.thresholds, args.volume, args.largest))}
            print(f"{key}: {record['validation'][key]['dice_3d']}", flush=True)
    record.update(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_end=list(os.getloadavg()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
