#!/usr/bin/env bash
# Another fine-tuning of the low-latency CV (issue 14): the same quantised ANNs and conversions as the
# run of configs/lowt_cv.json (linked, not retrained), fine-tuned under CONFIG and scored on the same
# test folds; about 10 min on 2 cores.
#   bash tools/lowt_cv_refit.sh           # firing-rate penalty 0.2 at T = 8 (configs/lowt_cv_rate.json)
#   CONFIG=configs/lowt_cv_rate005.json OUT=runs/lowt_cv_rate005 DOCS=docs/results/lowt_cv_rate005 \
#     bash tools/lowt_cv_refit.sh         # penalty 0.05
#   CONFIG=configs/lowt_cv_t4.json OUT=runs/lowt_cv_t4 DOCS=docs/results/lowt_cv_t4 \
#     bash tools/lowt_cv_refit.sh         # fine-tuned at T = 4, no penalty
#   SRC=runs/lowt_cv_long ANN_DOCS=docs/results/lowt_cv_long CONFIG=configs/lowt_cv_long_ft200.json \
#     OUT=runs/lowt_cv_long_ft200 DOCS=docs/results/lowt_cv_long_ft200 bash tools/lowt_cv_refit.sh
#                                         # the 24-epoch ANNs of tools/lowt_cv_long.sh, fine-tuned one epoch (108 batches)
#   (the same with CONFIG=configs/lowt_cv_long_lr5e4.json, OUT=runs/lowt_cv_long_lr5e4, DOCS=docs/results/lowt_cv_long_lr5e4: lr 5e-4; or lowt_cv_long_lr1e3: lr 1e-3, 2 epochs)
# RECONVERT=1 links only the trained ANNs (and a warm start's ReLU ANN), so the recipe converts them again
# under CONFIG's "convert" settings and scores the ANN and the new conversion in this run's own ann jobs:
#   RECONVERT=1 SRC=runs/lowt_cv_warm CONFIG=configs/lowt_cv_warm_direct.json OUT=runs/lowt_cv_warm_direct \
#     DOCS=docs/results/lowt_cv_warm_direct bash tools/lowt_cv_refit.sh   # direct input (issue 14)
# CODING=binary refits a binary run (tools/lowt_cv_binary.sh); a warm start's ReLU ANN is linked too, e.g. as
# the fine-tuning's teacher ("finetune": {"teacher": "relu"}):
#   CODING=binary SRC=runs/lowt_cv_binary_relu48_p90_kd_thick6 ANN_DOCS=docs/results/lowt_cv_binary_relu48_p90_kd_thick6 \
#     CONFIG=configs/lowt_cv_binary_relu48_p90_kdrelu_kd_thick6.json OUT=runs/lowt_cv_binary_relu48_p90_kdrelu_kd_thick6 \
#     DOCS=docs/results/lowt_cv_binary_relu48_p90_kdrelu_kd_thick6 bash tools/lowt_cv_refit.sh
# Needs runs/lowt_cv (hipposnn recipe --config configs/lowt_cv.json), or the SRC run.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-runs/lowt_cv}
R=${OUT:-runs/lowt_cv_rate}
CONFIG=${CONFIG:-configs/lowt_cv_rate.json}
DOCS=${DOCS:-docs/results/lowt_cv_rate}
ANN_DOCS=${ANN_DOCS:-docs/results/lowt_cv}
CODING=${CODING:-ternary}
for fold in 0 1 2 3 4; do
  src="$(cd "$SRC/$CODING/fold_$fold" && pwd)"
  dst="$R/$CODING/fold_$fold"
  mkdir -p "$dst"
  if [ "${RECONVERT:-0}" = 1 ]; then
    mkdir -p "$dst/ann"
    for f in best.pt final.pt last.pt log.json log.csv settings.json; do
      ln -sfn "$src/ann/$f" "$dst/ann/$f"
    done
  else
    ln -sfn "$src/ann" "$dst/ann"
  fi
  if [ -d "$src/ann_relu" ]; then ln -sfn "$(cd "$src/ann_relu" && pwd)" "$dst/ann_relu"; fi
done
{ echo start; date -u; uptime; } >> "$R/load.txt"
hipposnn recipe --config "$CONFIG" --data "${DATA:-../shared/data/msd_hippocampus}" --out "$R" \
  --jobs 2 --threads 1
{ echo end; date -u; uptime; } >> "$R/load.txt"
# records (no weights) into $DOCS, the table against the ANNs it started from (a reconversion scores its own)
if [ "${RECONVERT:-0}" = 1 ]; then FROM=(); else FROM=(--ann-from "$ANN_DOCS"); fi
python tools/report_lowt_cv.py --copy-from "$R" --lowt "$DOCS" "${FROM[@]}" --coding "$CODING" --reference --figure ''
cp "$R/load.txt" "$DOCS/load.txt"
