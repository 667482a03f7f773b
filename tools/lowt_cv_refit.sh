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
# Needs runs/lowt_cv (hipposnn recipe --config configs/lowt_cv.json), or the SRC run.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-runs/lowt_cv}
R=${OUT:-runs/lowt_cv_rate}
CONFIG=${CONFIG:-configs/lowt_cv_rate.json}
DOCS=${DOCS:-docs/results/lowt_cv_rate}
ANN_DOCS=${ANN_DOCS:-docs/results/lowt_cv}
for fold in 0 1 2 3 4; do
  mkdir -p "$R/ternary/fold_$fold"
  ln -sfn "$(cd "$SRC/ternary/fold_$fold/ann" && pwd)" "$R/ternary/fold_$fold/ann"
done
hipposnn recipe --config "$CONFIG" --data "${DATA:-../shared/data/msd_hippocampus}" --out "$R" \
  --jobs 2 --threads 1
# records (no weights) into $DOCS, the table against the ANNs it started from
python tools/report_lowt_cv.py --copy-from "$R" --lowt "$DOCS" --ann-from "$ANN_DOCS" \
  --reference --figure ''
