#!/usr/bin/env bash
# The firing-rate penalty in the low-latency CV (issue 14): the same quantised ANNs and conversions as
# the run of configs/lowt_cv.json (linked, not retrained), fine-tuned at T = 8 with loss += 0.2 x mean
# hidden firing rate (configs/lowt_cv_rate.json), scored on the same test folds. ~11 min on 2 cores.
#   bash tools/lowt_cv_rate.sh            # needs runs/lowt_cv (hipposnn recipe --config configs/lowt_cv.json)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-runs/lowt_cv}
R=${OUT:-runs/lowt_cv_rate}
for fold in 0 1 2 3 4; do
  mkdir -p "$R/ternary/fold_$fold"
  ln -sfn "$(cd "$SRC/ternary/fold_$fold/ann" && pwd)" "$R/ternary/fold_$fold/ann"
done
hipposnn recipe --config configs/lowt_cv_rate.json --data "${DATA:-../shared/data/msd_hippocampus}" --out "$R" \
  --jobs 2 --threads 1
# records (no weights) into docs/results/lowt_cv_rate/, the table against the ANNs it started from
python tools/report_lowt_cv.py --copy-from "$R" --lowt docs/results/lowt_cv_rate --ann-from docs/results/lowt_cv \
  --reference --figure ''
