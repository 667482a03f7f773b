"""Ship the low-latency SNN of a ``configs/lowt_cv.json`` recipe run, with its card and its CV (issue 14).

The recipe run (``hipposnn recipe --config configs/lowt_cv.json ...``) holds the 5-fold CV and the final
model (fold "all"). This tool

1. copies every job's logs and results (no weights) into ``docs/results/lowt_cv/`` and writes the CV
   summary there (``tools/report_lowt_cv.py``: ``summary.json``, ``table.md``, the figure);
2. copies the final fine-tuned SNN to ``HippoSNN/hipposnn/models/hipposnn_snn_t8_<coding>.pt`` and
   writes its JSON and Markdown cards: data, split, settings, CV metrics, validation, compute, code.

    python tools/ship_lowt_model.py --run runs/lowt_cv [--dry-run]
    python tools/ship_lowt_model.py --run runs/lowt_cv --final runs/lowt_final/finetune_T8 \
        --ann runs/lowt_final/ann_L8      # ship the warm-started model of tools/train_lowt_final.sh instead
    python tools/ship_lowt_model.py --cv docs/results/lowt_cv_warm --final runs/lowt_final/finetune_T8_lr1e3 \
        --ann runs/lowt_final/ann_L8 --results docs/results/lowt_final_lr1e3 \
        --command "LR=1e-3 FT_EPOCHS=2 BATCHES=270 FT=finetune_T8_lr1e3 OUT=runs/lowt_final \
                   bash tools/train_lowt_final.sh"

``--final`` / ``--ann``: the fine-tuned SNN to ship and the quantised ANN it came from (default: the CV
run's final model, fold "all", trained from random weights). A model from ``tools/train_lowt_final.sh``
takes the same path from a warm start (the shipped site-robust ANN); its card then says which path the
CV measured: from random weights (``configs/lowt_cv.json``) or warm-started from each fold's own ReLU
ANN (``"ann": {"warm_start": ...}``, ``configs/lowt_cv_warm.json``). ``--cv``: the committed CV results
folder the card cites (``--run`` first copies a recipe run's logs and results into it); ``--results``:
where the warm-started run's logs and settings go; ``--command``: the command that trained it.

``--input ENCODING`` ships the weights to run on another input than they were fine-tuned on (the input is a
run-time choice of ``SpikingUNet``; the weights are unchanged): the card then also gives the validation Dice
measured with that input on the same held-out crops and, with ``--input-cv``, the CV of the same swap
(``tools/lowt_cv_input_swap.py``'s ``summary.json``):

    python tools/ship_lowt_model.py --cv docs/results/lowt_cv_warm32_poisson --final runs/lowt_final/finetune_T8 \
        --ann runs/lowt_final/ann_L8 --input regular \
        --input-cv docs/results/lowt_cv_warm32_poisson/input_swap/summary.json

``--no-cv REASON`` ships a model whose path has no CV of its own (the binary low-latency model: its coding's fold
ANNs were never trained on this CPU); the card then says so and why, in place of CV metrics, and ``--wholebrain``
cites the whole-brain evaluation (``tools/eval_sets.py``'s ``table_*.csv``) it was chosen on:

    python tools/ship_lowt_model.py --coding binary --final runs/lowt_final_binary/finetune_T8_direct_kd \
        --ann runs/lowt_final_binary/ann_L8 --results docs/results/lowt_final_binary_direct --default \
        --no-cv "..." --wholebrain docs/results/wholebrain_eval/table_snn-t8_binary.csv --command "..."

``--by-t SUMMARY.json`` adds the T that ``tools/lowt_cv_by_t.py`` rescored the cited CV's fine-tuned SNNs at (the
recipe scores only its config's T). ``--cv-note TEXT`` says how the cited CV's path differs from the shipped
model's (the binary model's CV had to warm-start each fold from a ternary-input ReLU ANN; its command:
``docs/results/lowt_cv_binary_kd/ship_command.txt``).

``--readout PROBE.json`` adds what the segmentation pipeline's readout step (``hipposnn.readout``) makes of the
model: the cited CV's Dice with the setting ``tools/probe_readout_smoothing.py --run ... --validation`` chose on
the folds' validation crops, the model file's own held-out crops from the same probe's ``--model`` rows, and with
``--readout-wholebrain TABLE.csv`` the whole-brain evaluation the pipeline gives now.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import report_lowt_cv  # noqa: E402
from hipposnn.encoding import INPUT_ENCODINGS  # noqa: E402
from hipposnn.options import CLIP_PERCENTILE  # noqa: E402
from hipposnn.weights import (  # noqa: E402
    MODELS_DIR,
    model_from_payload,
    read_payload,
    save_model,
    sha256_file,
    write_card,
)

RESULTS = ROOT / "docs" / "results" / "lowt_cv"
FINAL_RESULTS = ROOT / "docs" / "results" / "lowt_final"


def _rel(path: Path) -> str:
    """``path`` as the card cites it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


#: How the card names the CV behind a model: its JSON key, its sentence in the limitations and its heading in
#: the Markdown card; keyed None for the CV run's own final model, else by whether the CV was warm-started.
CV_WORDING = {
    None: ("cv_metrics", "CPU budget: 12 ANN epochs and one short fine-tuning pass per model; ", "- Cross-validation"),
    False: ("cv_metrics_of_the_path_from_random_weights",
            "the CV measured the same path from random weights, not this warm start; ",
            "- Cross-validation of the same path from random weights"),
    True: ("cv_metrics_of_the_path_warm_started_from_each_folds_relu_ann",
           "the CV warm-started each fold from its own ReLU ANN, this model from the shipped site-robust ANN; ",
           "- Cross-validation of the same path warm-started from each fold's ReLU ANN"),
}


#: What the card says of a default model: chosen on its CV, or on the whole-brain sets (``--wholebrain`` given).
DEFAULT_WORDING = {
    False: "the default SNN (docs/models.md, 'Default'); ",
    True: "the default SNN for whole-brain scans (docs/segmentation.md, 'The whole-brain default'); ",
}


#: How the card's method names each input encoding (hipposnn.encoding.INPUT_ENCODINGS).
INPUT_WORDING = {
    "poisson": "; Poisson input spikes",
    "regular": "; regular input spikes: each pixel fires evenly spaced spikes at its Poisson rate from a random "
               "phase of its own, the same expected input without the sampling noise",
    "direct": "; direct input: the normalised image itself is the first layer's input current at every step",
}


#: What the card keeps of a pooled SNN result at one T (the CV's summary and a rescoring by T alike).
CV_KEYS = ("dice_3d", "sd_3d", "dice_2d", "n_cases", "folds", "firing_rate", "spikes_per_neuron", "energy_vs_ann")


def cv_metrics(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The card's CV block: pooled test Dice of the quantised ANN and the fine-tuned SNN by T, with energy."""
    low = summary["lowt"]
    return {
        "folds": "5 subject-wise folds of the 200 MSD crops (seed 0), the reference CV's folds; test folds only",
        "quantised_ann": {k: low["ann"][k] for k in ("dice_3d", "sd_3d", "dice_2d", "n_cases", "folds")},
        "finetuned_by_T": {t: {k: r[k] for k in CV_KEYS if k in r} for t, r in low["finetuned"].items()},
        "converted_by_T": {t: {k: r[k] for k in CV_KEYS if k in r} for t, r in low["converted"].items()},
        "per_fold": low["per_fold"],
    }


def add_rescored_t(cv: Dict[str, Any], by_t: Dict[str, Any], source: str) -> None:
    """Add the T that ``tools/lowt_cv_by_t.py`` rescored (its ``summary.json``) to the card's CV by T.

    A T the recipe scored too must agree (same models, crops and seed): a mismatch means another run.
    """
    rows = cv["finetuned_by_T"]
    for t, row in by_t["rows"].items():
        if t == "ann":
            continue
        if t in rows and abs(rows[t]["dice_3d"] - row["dice_3d"]) > 1e-6:
            raise SystemExit(f"{source}: T = {t} scores {row['dice_3d']:.4f}, the cited CV {rows[t]['dice_3d']:.4f}: "
                             "not the same models")
        rows.setdefault(t, {k: row[k] for k in CV_KEYS if k in row})
    cv["finetuned_by_T"] = dict(sorted(rows.items(), key=lambda item: int(item[0])))
    cv["finetuned_by_T_rescored"] = {"source": source, "tool": by_t["tool"], "run": by_t["run"]}


def _cv_line(cv: Dict[str, Any], heading: str | None, t: int) -> str:
    """The Markdown card's CV line: the CV's pooled numbers, or why the model has none."""
    if heading is None:
        return f"- Cross-validation: none ({cv['none']})"
    ft = cv["finetuned_by_T"][str(t)]
    by_t = "; ".join(f"T = {k}: {r['dice_3d']:.4f} ({r['energy_vs_ann']:.3f} x)"
                     for k, r in cv["finetuned_by_T"].items())
    return (heading + f" (5 folds, test crops, T = {t}): 3D Dice {ft['dice_3d']:.4f} ± {ft['sd_3d']:.4f}; "
            f"its quantised ANN {cv['quantised_ann']['dice_3d']:.4f}; {ft['spikes_per_neuron']:.2f} spikes per "
            f"neuron; energy {ft['energy_vs_ann']:.3f} x the ANN's (45 nm convention)"
            + (f"; {cv['note']}" if cv.get("note") else "")
            + f"\n- The same fine-tuned SNNs run at other T (CV test 3D Dice, x the ANN's energy): {by_t}")


def wholebrain_rows(table: Path) -> List[Dict[str, Any]]:
    """The card's whole-brain block: per set, mean Dice, failures and volume ratio (``tools/eval_sets.py``)."""
    with table.open(newline="") as handle:
        return [{k: row[k] for k in ("set", "protocol", "hemispheres", "dice_mean", "dice_min", "failures",
                                     "volume_ratio_mean") if k in row} for row in csv.DictReader(handle)]


def readout_metrics(probe_path: Path, model_name: str, wholebrain: Path | None) -> Dict[str, Any]:
    """The card's readout block: the probe's choice on the CV folds' validation crops and its test Dice, the
    model file's held-out crops with that setting, and the whole-brain rows with the step."""
    probe = json.loads(probe_path.read_text())
    chosen = (probe.get("chosen_on_validation") or {}).get("snn")
    if chosen is None:
        raise SystemExit(f"{probe_path}: no choice on validation crops (run the probe with --run ... --validation)")
    own = (probe.get("validation") or {}).get(model_name)
    if own is None or chosen["setting"] not in own["dice_3d"]:
        raise SystemExit(f"{probe_path}: no --model row for {model_name} at {chosen['setting']}")
    block = {"source": _rel(probe_path), "setting": chosen["setting"], "cv_test_dice_3d": chosen["test"],
             "cv_test_dice_3d_raw": chosen["raw_test"], "cv_validation_dice_3d": chosen["validation"],
             "heldout_dice_3d": own["dice_3d"][chosen["setting"]], "heldout_dice_3d_raw": own["dice_3d"].get("0.0"),
             **({"wholebrain": {"source": _rel(wholebrain), "sets": wholebrain_rows(wholebrain)}}
                if wholebrain else {})}
    # What `hipposnn segment` applies without --smooth may differ from the setting validation chose for this model:
    # the card then gives both, so that it never calls the chosen one the pipeline's.
    pipeline = pipeline_setting()
    pooled = ((probe.get("cv") or {}).get("pooled") or {}).get("snn") or {}
    if pipeline != chosen["setting"] and pipeline in pooled and pipeline in own["dice_3d"]:
        block["pipeline"] = {"setting": pipeline, "cv_test_dice_3d": pooled[pipeline],
                             "heldout_dice_3d": own["dice_3d"][pipeline]}
    return block


def pipeline_setting() -> str:
    """The probe's key for the readout the segmentation pipeline applies to a spiking model by default: a Gaussian of
    ``hipposnn.readout.READOUT_SIGMA`` cut at constant volume, then each side's largest component."""
    from hipposnn.readout import READOUT_SIGMA
    from probe_readout_smoothing import LARGEST, VOLUME, setting

    return setting(READOUT_SIGMA, VOLUME) + LARGEST


def readout_line(readout: Dict[str, Any]) -> str:
    """The card's line on the pipeline's readout step (``hipposnn.readout``)."""
    from probe_readout_smoothing import describe  # the probe defines its result keys

    default = readout.get("pipeline")  # present only when it differs from the chosen setting
    step = "the readout step" if default else "the segmentation pipeline's readout step"
    line = (f"- With {step} ({describe(readout['setting'])}; `hipposnn.readout`, "
            f"chosen on the CV folds' validation crops, `{readout['source']}`): CV test 3D Dice "
            f"{readout['cv_test_dice_3d']:.4f} (raw map {readout['cv_test_dice_3d_raw']:.4f}); held-out crops "
            f"{readout['heldout_dice_3d']:.4f} (raw {readout['heldout_dice_3d_raw']:.4f})")
    if default:
        line += (f"; with what `hipposnn segment` applies by default ({describe(default['setting'])}): CV test 3D Dice "
                 f"{default['cv_test_dice_3d']:.4f}, held-out crops {default['heldout_dice_3d']:.4f}")
    if "wholebrain" in readout:
        line += f"; whole-brain (`{readout['wholebrain']['source']}`): " + "; ".join(
            f"{r['set']} Dice {float(r['dice_mean']):.3f}, {r['failures']} below 0.5, volume ratio "
            f"{float(r['volume_ratio_mean']):.2f}" for r in readout["wholebrain"]["sets"])
    return line


def validation_with_input(model: Any, names: List[str], data: Path, timesteps: int, coding: str) -> Dict[str, Any]:
    """3D Dice of the shipped ``model`` (on its own input) on the held-out crops ``names`` it was validated on."""
    from hipposnn.pipeline import evaluate_model

    result = evaluate_model(model, data, names, timesteps, coding, seed=0)
    return {"input_encoding": model.input_encoding, "val_dice_3d": result["mean_dice_3d"], "n_cases": len(names),
            "seed": 0, "evaluator": "hipposnn.pipeline.evaluate_model"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None,
                    help="recipe run whose logs and results are first copied into --cv (and reported there)")
    ap.add_argument("--cv", type=Path, default=RESULTS, help="committed CV results folder (summary.json) to cite")
    ap.add_argument("--coding", default="ternary")
    ap.add_argument("--final", type=Path, default=None, help="fine-tuned SNN folder (default: RUN's fold 'all')")
    ap.add_argument("--ann", type=Path, default=None, help="its quantised ANN folder (default: RUN's fold 'all')")
    ap.add_argument("--results", type=Path, default=FINAL_RESULTS, help="where a warm-started run's logs go")
    ap.add_argument("--command", default="OUT=runs/lowt_final bash tools/train_lowt_final.sh",
                    help="the command that trained a warm-started model (for its card)")
    ap.add_argument("--default", action="store_true",
                    help="the model is the default SNN (options.DEFAULT_SNN): its card says so instead of why not")
    ap.add_argument("--dry-run", action="store_true", help="copy results and report only; ship no model")
    ap.add_argument("--input", choices=INPUT_ENCODINGS, default=None, dest="input_encoding",
                    help="ship the weights to run on this input (default: the one they were fine-tuned on)")
    ap.add_argument("--input-cv", type=Path, default=None,
                    help="tools/lowt_cv_input_swap.py summary.json with the CV of that input, cited on the card")
    ap.add_argument("--no-cv", default=None, metavar="REASON",
                    help="the model's path has no CV of its own: the card says so, and why, instead of citing --cv")
    ap.add_argument("--cv-note", default=None, metavar="TEXT",
                    help="how the cited CV's path differs from the shipped model's (card: CV line and limitations)")
    ap.add_argument("--wholebrain", type=Path, default=None, metavar="TABLE.csv",
                    help="tools/eval_sets.py table of the model on every labelled whole-brain set, cited on the card")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus",
                    help="MSD crops for the validation Dice with --input")
    ap.add_argument("--readout", type=Path, default=None, metavar="PROBE.json",
                    help="tools/probe_readout_smoothing.py --validation output: the CV and held-out crops with the "
                         "pipeline's readout step")
    ap.add_argument("--readout-wholebrain", type=Path, default=None, metavar="TABLE.csv",
                    help="tools/eval_sets.py table of the model with the readout step (needs --readout)")
    ap.add_argument("--by-t", type=Path, default=None, metavar="SUMMARY.json",
                    help="tools/lowt_cv_by_t.py's summary.json: the cited CV's fine-tuned SNNs rescored at more T")
    args = ap.parse_args()
    if args.by_t is not None and args.no_cv is not None:
        ap.error("--by-t adds to a cited CV; --no-cv says there is none")
    if args.input_cv is not None and args.input_encoding is None:
        ap.error("--input-cv needs --input")
    if args.cv_note is not None and args.no_cv is not None:
        ap.error("--cv-note describes a cited CV; --no-cv says there is none")
    if args.readout_wholebrain is not None and args.readout is None:
        ap.error("--readout-wholebrain needs --readout")
    if args.run is not None:
        report_lowt_cv.main(["--copy-from", str(args.run), "--lowt", str(args.cv)]
                            + (["--figure", ""] if args.cv != RESULTS else []))
    elif args.final is None:
        raise SystemExit("ship_lowt_model.py: without --final, --run (the recipe run with fold 'all') is needed")
    warm = args.final is not None
    has_cv = args.no_cv is None
    if has_cv:
        summary = json.loads((args.cv / "summary.json").read_text())
        config = json.loads((args.cv / "config.json").read_text())
        t, levels = int(config["default_timesteps"]), int(config["ann"]["quant_levels"])
        cv_key, cv_limitation, cv_heading = CV_WORDING[bool(config["ann"].get("warm_start")) if warm else None]
        cv = cv_metrics(summary)
        if args.cv_note:
            cv["note"] = args.cv_note
            cv_limitation = f"{cv_limitation.removesuffix('; ')} ({args.cv_note}); "
        if args.by_t is not None:
            add_rescored_t(cv, json.loads(args.by_t.read_text()), _rel(args.by_t))
    elif args.ann is None or args.run is not None or not warm:
        raise SystemExit("ship_lowt_model.py: --no-cv ships a warm-started model: give --final and --ann, not --run")
    else:  # the run's own settings say what the CV's config would
        t = int(json.loads((args.final / "settings.json").read_text())["config"]["timesteps"])
        levels = int(json.loads((args.ann / "settings.json").read_text())["config"]["quant_levels"])
        cv_key, cv_limitation, cv_heading = "cross_validation", f"not cross-validated: {args.no_cv}; ", None
        cv = {"none": args.no_cv}
    final = args.final or args.run / args.coding / "fold_all" / f"finetune_T{t}"
    ann = args.ann or args.run / args.coding / "fold_all" / "ann"
    if args.dry_run:
        return 0
    name = f"hipposnn_snn_t{t}_{args.coding}"
    trained = read_payload(final / "best.pt")
    trained_input = trained.get("input_encoding", "poisson")
    swapped = args.input_encoding not in (None, trained_input)
    swap_cv = None
    if swapped and args.input_cv is not None:
        swap = json.loads(args.input_cv.read_text())
        if args.input_encoding not in swap["rows"]:
            raise SystemExit(f"{args.input_cv} has no row for {args.input_encoding} input")
        swap_cv = {"source": _rel(args.input_cv), "run": swap["run"], "trained_with": swap["trained_with"],
                   "rows": swap["rows"]}
    if swapped:  # the same weights, told to take another input
        shipped = model_from_payload(trained, "snn", source=str(final / "best.pt"))
        shipped.input_encoding = args.input_encoding
        save_model(shipped, MODELS_DIR / f"{name}.pt", trained.get("meta"))
    else:
        shutil.copyfile(final / "best.pt", MODELS_DIR / f"{name}.pt")
    payload = read_payload(MODELS_DIR / f"{name}.pt", verify=False)  # the card is written below
    meta = payload.get("meta") or {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    ann_log = json.loads((ann / "log.json").read_text())["epochs"]
    ann_created = (read_payload(ann / "best.pt", verify=False).get("meta") or {}).get("created", "?")
    ft_log = json.loads((final / "log.json").read_text())["epochs"]
    ann_seconds = sum(e["seconds"] for e in ann_log)
    ft_seconds = sum(e["seconds"] for e in ft_log)
    settings = json.loads((final / "settings.json").read_text())
    distill = float(settings["config"].get("distill") or 0.0)
    best = max(ft_log, key=lambda e: e["val_dice_3d"])
    ann_config = json.loads((ann / "settings.json").read_text()).get("config") or {}
    clip_percentile = float(ann_config.get("clip_percentile", CLIP_PERCENTILE))  # runs before the option: 99.9
    card = {
        "model": f"{name}.pt", "kind": "snn", "coding": args.coding, "timesteps": t,
        "sha256": sha256_file(MODELS_DIR / f"{name}.pt"),
        "architecture": payload["spec"], "output_scaling": payload.get("output_scaling"),
        "initial_membrane": payload.get("initial_membrane"), "reset": payload.get("reset"),
        "input_encoding": payload.get("input_encoding", "poisson"),
        "thresholds": payload.get("thresholds"),
        "data": "MSD Task04 Hippocampus, 200 T1 crops (../shared/data/msd_hippocampus); labels 1+2 merged",
        "training_split": "fold 'all': a seeded 10 % of the crops held out for validation (LR schedule, best "
                          "epoch), the other 90 % trained on",
        "method": (f"quantised-clip ANN (L = {levels} levels, a learned clip per layer) "
                   + (f"warm-started from the shipped site-robust {args.coding} ANN (clips from the "
                      f"{clip_percentile:g}th percentile of its activations) and trained on" if warm
                      else "trained from random weights")
                   + " with in-plane and site augmentation -> conversion from the "
                   "clips (thresholds = clips, membranes start at half threshold, soft reset; no balancing"
                   + INPUT_WORDING[trained_input]
                   + f") -> BPTT fine-tuning at T = {t} with the triangle surrogate"
                   + (f" and distillation from the quantised ANN's answer (per-pixel KL, weight {distill:g}; "
                      "the same augmented batches)" if distill > 0 else "")
                   + (f"; shipped to run on {args.input_encoding} input, weights unchanged "
                      f"({INPUT_WORDING[args.input_encoding][2:]})" if swapped else "")),
        "recipe": ({"script": "tools/train_lowt_final.sh"} if warm else
                   {"config": "configs/lowt_cv.json", "settings": config}),
        "training": {"meta": payload.get("meta"), "finetune_settings": settings.get("config"),
                     "ann_settings": ann_config},
        cv_key: cv,
        **({"wholebrain_evaluation": {"source": _rel(args.wholebrain), "sets": wholebrain_rows(args.wholebrain)}}
           if args.wholebrain else {}),
        **({"cv_with_shipped_input": swap_cv} if swap_cv else {}),
        **({"readout_step": readout_metrics(args.readout, f"{name}.pt", args.readout_wholebrain)}
           if args.readout else {}),
        "validation_msd_crops": {"best_val_dice_3d": best["val_dice_3d"], "at_batches": best["batches"],
                                 "n_cases": len(settings.get("val", [])), "input_encoding": trained_input,
                                 **({"with_shipped_input": validation_with_input(
                                     shipped, settings["val"], args.data, t, args.coding)} if swapped else {})},
        "compute": (f"2-core CPU: quantised ANN {len(ann_log)} epochs ({ann_seconds / 60:.0f} min), conversion from "
                    f"the clips (no data), fine-tuning {ft_log[-1]['batches']} batches of "
                    f"{settings['config']['batch_size']} at T = {t} ({ft_seconds / 60:.0f} min): "
                    + (f"`{args.command}`" if warm else
                       "`hipposnn recipe --config configs/lowt_cv.json --data ../shared/data/msd_hippocampus "
                       "--out runs/lowt_cv --jobs 2 --threads 1`")),
        # the weights' own dates say when they were made; HEAD is only the code that shipped them
        "code_version": (f"hipposnn {meta.get('code_version', '?')}; quantised ANN trained {ann_created}, weights "
                         f"fine-tuned {meta.get('created', '?')}, "
                         + (f"input set to {args.input_encoding} and " if swapped else "")
                         + f"shipped with the code of commit {commit}"),
        "limitations": (f"{args.coding} coding only; "
                        + (DEFAULT_WORDING[args.wholebrain is not None] if args.default else
                           "not the default: its CV Dice is below the T = 32 model's (docs/models.md); ")
                        + cv_limitation
                        + "boundaries follow the MSD protocol, not FreeSurfer's, DLMUSE's or LPBA40's"),
        "provenance": {"derived_from": ([_rel(args.cv / "summary.json")] if has_cv else [])
                       + ([_rel(args.results)] if warm else [_rel(args.cv / args.coding / "fold_all")])
                       + ([_rel(args.wholebrain)] if args.wholebrain else [])},
    }
    if warm:  # the logs and settings of the warm-started run, beside the CV's
        args.results.mkdir(parents=True, exist_ok=True)
        for folder, prefix in ((ann, "ann"), (final, "snn")):
            for log in ("log.json", "settings.json"):
                shutil.copyfile(folder / log, args.results / f"{prefix}_{log}")
    write_card(MODELS_DIR / f"{name}.json", card)
    swap_lines = ""
    if swapped:
        val = card["validation_msd_crops"]["with_shipped_input"]
        swap_lines = (f" on {trained_input} input in training; {val['val_dice_3d']:.4f} on the shipped "
                      f"{args.input_encoding} input (measured at shipping, seed 0)")
        if swap_cv:
            rows = swap_cv["rows"]
            swap_lines += ("\n- Cross-validation of the input swap (the CV above's fine-tuned SNNs, same folds, "
                           f"T = {t}): " + "; ".join(f"{enc} input {r['dice_3d']:.4f} ± {r['sd_3d']:.4f} at "
                                                     f"{r['energy_vs_ann']:.3f} x the ANN's energy"
                                                     for enc, r in rows.items()))
    md = [f"# Model card: {name}.pt", "", f"- SHA-256: `{card['sha256']}`",
          f"- Kind: SNN; coding: {args.coding}; T: {t} (low-latency path)",
          f"- Method: {card['method']}",
          f"- Architecture: {payload['spec']}", f"- Data: {card['data']}", f"- Split: {card['training_split']}",
          _cv_line(cv, cv_heading, t),
          f"- Validation (held-out MSD crops of the final split): 3D Dice {best['val_dice_3d']:.4f}" + swap_lines,
          *([f"- Whole-brain evaluation (`{_rel(args.wholebrain)}`): " + "; ".join(
              f"{r['set']} Dice {float(r['dice_mean']):.3f}, {r['failures']} below 0.5, volume ratio "
              f"{float(r['volume_ratio_mean']):.2f}" for r in card["wholebrain_evaluation"]["sets"])]
            if args.wholebrain else []),
          *([readout_line(card["readout_step"])] if args.readout else []),
          f"- Compute: {card['compute']}", f"- Code: {card['code_version']}",
          f"- Limitations: {card['limitations']}",
          f"- Provenance: {', '.join(f'`{p}`' for p in card['provenance']['derived_from'])}",
          "", f"Full settings and metrics: `{name}.json`; CV tables and figure: `docs/models.md`."]
    (MODELS_DIR / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"shipped {name}.pt ({card['sha256'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
