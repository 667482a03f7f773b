"""Ship the site-robust models of tools/train_robust_final.sh, with their cards (issue 11).

Scores the shipped (old) and the new ANN and SNN on the same 20 held-out MSD validation crops (the split
every final model used: a seeded 10 % of the crops), copies the run logs into docs/results/robust_final/,
replaces the shipped ternary model files and rewrites their cards. The predecessors' 5-fold
cross-validation is kept in the card under ``predecessor_cv_metrics``, clearly labelled: the new models
were not cross-validated (CPU budget), see the card's limitations.

Usage: python tools/ship_robust_models.py [--run runs/robust] [--coding ternary|binary]
       [--data ../shared/data/msd_hippocampus] [--dry-run]

``--only ann`` ships the ANN alone (the binary ANN is also the whole-brain QC twin of the SNNs); ``--command`` and
``--site-thick-mm`` then describe its training on the card, and ``--results`` says where its logs go:

    python tools/ship_robust_models.py --coding binary --only ann --run runs/twin_ref --site-thick-mm 6 \
        --results docs/results/robust_final_binary_thick6 --command "hipposnn train-ann ... --site-thick-mm 6"
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

from hipposnn.options import SITE_THICK_MM
from hipposnn.pipeline import evaluate_model, split_names
from hipposnn.weights import load_model, read_payload, sha256_file, write_card

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "HippoSNN" / "hipposnn" / "models"
RESULTS_ROOT = ROOT / "docs" / "results"


def _score(path: Path, data: Path, names, kind: str, coding: str) -> Dict[str, Any]:
    model = load_model(path, kind)
    result = evaluate_model(model, data, names, timesteps=32, coding=coding, seed=0)
    return {"dice_3d": float(result["mean_dice_3d"]), "dice_2d": float(result["mean_dice_2d"]),
            "n_cases": len(names), "firing_rate": result.get("mean_firing_rate")}


def _compute(run: Path, coding: str, kind: str, command: str) -> str:
    """Wall time of the run from its own log (the sum of its epochs' seconds)."""
    seconds = sum(e["seconds"] for e in json.loads((run / "log.json").read_text())["epochs"])
    what = ("ANN" if kind == "ann" else "fine-tuning (T=32, after early-stop conversion at T=200)")
    return (f"{what}: {seconds / 60:.0f} min on the 2-core CPU, warm start from the reference {coding} ANN "
            f"(commit 8cbf740), site augmentation: `{command}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "robust")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    parser.add_argument("--coding", choices=("ternary", "binary"), default="ternary")
    parser.add_argument("--code-commit", default=None,
                        help="commit whose code trained the run (default: HEAD, when shipping right after training)")
    parser.add_argument("--reuse-scores", action="store_true",
                        help="take the scores of a previous --dry-run (same validation cases) instead of rescoring")
    parser.add_argument("--dry-run", action="store_true", help="score and report only; change no shipped file")
    parser.add_argument("--only", choices=("ann", "snn"), default=None, help="ship this kind alone")
    parser.add_argument("--command", default="bash tools/train_robust_final.sh", help="the training command (card)")
    parser.add_argument("--site-thick-mm", type=float, default=SITE_THICK_MM,
                        help="the training's --site-thick-mm (card; the default: the augmentation's defaults)")
    parser.add_argument("--results", type=Path, default=None,
                        help="where the logs and validation.json go (default docs/results/robust_final[_CODING])")
    args = parser.parse_args()
    thick = args.site_thick_mm != SITE_THICK_MM
    augmentation = "hipposnn.augment.SiteAugmentation defaults" + (
        f", one-axis slices up to {args.site_thick_mm:g} mm (--site-thick-mm)" if thick else "")
    resolution = "1.5-3 mm resolution" + (f", one-axis slices up to {args.site_thick_mm:g} mm" if thick else "")
    _, val, _ = split_names(args.data, None, 5, 0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    pairs = {"ann": (args.run / f"ann_{args.coding}", f"hipposnn_ann_{args.coding}"),
             "snn": (args.run / "finetune_T32", f"hipposnn_snn_{args.coding}")}
    if args.only:
        pairs = {args.only: pairs[args.only]}
    report: Dict[str, Any] = {"validation_cases": val, "commit": commit}
    default_results = RESULTS_ROOT / ("robust_final" if args.coding == "ternary" else f"robust_final_{args.coding}")
    RESULTS = args.results.resolve() if args.results else default_results
    previous = RESULTS / "validation.json"
    if args.reuse_scores and previous.exists():  # the scores of a --dry-run of the same models and cases
        old_report = json.loads(previous.read_text())
        if old_report.get("validation_cases") == val and all(k in old_report for k in pairs):
            report = old_report
    for kind, (run, name) in pairs.items():
        if kind in report:
            print(kind, json.dumps(report[kind]), "(scores reused)", flush=True)
            continue
        new, old = run / "best.pt", MODELS / f"{name}.pt"
        report[kind] = {"old": _score(old, args.data, val, kind, args.coding),
                        "new": _score(new, args.data, val, kind, args.coding)}
        print(kind, json.dumps(report[kind]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.dry_run:
        return
    for kind, (run, name) in pairs.items():
        for log in ("log.json", "settings.json"):
            shutil.copyfile(run / log, RESULTS / f"{kind}_{log}")
        card_file = MODELS / f"{name}.json"
        card = json.loads(card_file.read_text())
        shutil.copyfile(run / "best.pt", MODELS / f"{name}.pt")
        payload = read_payload(MODELS / f"{name}.pt", verify=False)  # the card is rewritten below
        if "predecessor_sha256" not in card:  # a rerun keeps the first predecessor's record
            card["predecessor_cv_metrics"] = card.pop("cv_metrics", None)
            card["predecessor_sha256"] = card["sha256"]
        card["replaces_sha256"] = card["sha256"]  # the file this one replaces (the predecessor may lie further back)
        card.update({
            "sha256": sha256_file(MODELS / f"{name}.pt"),
            "thresholds": payload.get("thresholds"),
            "training": {"meta": payload["meta"], "command": args.command, "site_augmentation": augmentation},
            "validation_20_msd_crops": report[kind],
            "code_version": f"hipposnn, trained with the code of commit {args.code_commit or commit}",
            "compute": _compute(run, args.coding, kind, args.command),
            "limitations": ("not cross-validated: predecessor_cv_metrics are the 5-fold CV of the predecessor "
                            "(same recipe without site augmentation); validation on 20 held-out MSD crops only; "
                            "boundaries follow the MSD protocol, not FreeSurfer's, DLMUSE's or LPBA40's"),
            "provenance": {"derived_from": [f"{RESULTS.relative_to(ROOT)}/{kind}_log.json",
                                            f"{RESULTS.relative_to(ROOT)}/{kind}_settings.json",
                                            f"{RESULTS.relative_to(ROOT)}/validation.json"]},
        })
        write_card(card_file, card)
        v = report[kind]
        md = [f"# Model card: {name}.pt", "", f"- SHA-256: `{card['sha256']}`",
              f"- Kind: {kind.upper()}; coding: {args.coding}; T: {card.get('timesteps')}"
              + ("; the default model of its kind" if args.coding == "ternary" else ""),
              f"- Architecture: {payload['spec']}", f"- Data: {card['data']}", f"- Split: {card['training_split']}",
              f"- Preprocessing: {card['preprocessing']}; exact zeros are not content (masking)",
              f"- Training: site augmentation (bias field, gamma, {resolution}, noise, masking planes; "
              "`hipposnn.augment`) on top of the in-plane affine augmentation",
              f"- Validation (20 held-out MSD crops, 3D Dice): {v['new']['dice_3d']:.4f} "
              f"(predecessor {v['old']['dice_3d']:.4f})",
              f"- Compute: {card['compute']}", f"- Code: {card['code_version']}",
              f"- Limitations: {card['limitations']}",
              f"- Provenance: {', '.join(f'`{p}`' for p in card['provenance']['derived_from'])}",
              "", f"Full settings and metrics: `{name}.json`; whole-brain evaluation: `docs/segmentation.md`."]
        (MODELS / f"{name}.md").write_text("\n".join(md) + "\n")
        print(f"shipped {name}.pt ({card['sha256'][:12]})")


if __name__ == "__main__":
    main()
