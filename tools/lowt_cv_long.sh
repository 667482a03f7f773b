#!/usr/bin/env bash
# Longer quantised-ANN training in the low-latency CV (issue 14): copies the 5 folds' ANN checkpoints of
# the configs/lowt_cv.json run (epoch 12) into a new run folder without their results, so that the
# recipe resumes them to 24 epochs (configs/lowt_cv_long.json), converts them from their clips and
# fine-tunes them at T = 8 as before; ~55 min on 2 cores.
#   bash tools/lowt_cv_long.sh             # needs runs/lowt_cv (hipposnn recipe --config configs/lowt_cv.json)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-runs/lowt_cv}
R=${OUT:-runs/lowt_cv_long}
DOCS=${DOCS:-docs/results/lowt_cv_long}
for fold in 0 1 2 3 4; do
  if [ ! -e "$R/ternary/fold_$fold/ann/last.pt" ]; then
    mkdir -p "$R/ternary/fold_$fold/ann"
    cp "$SRC/ternary/fold_$fold/ann/"{last.pt,best.pt,settings.json,log.csv,log.json} "$R/ternary/fold_$fold/ann/"
  fi
done
hipposnn recipe --config configs/lowt_cv_long.json --data "${DATA:-../shared/data/msd_hippocampus}" --out "$R" \
  --jobs 2 --threads 1
python tools/report_lowt_cv.py --copy-from "$R" --lowt "$DOCS" --reference --figure ''
