#!/usr/bin/env bash
# The warm-start CV with longer ReLU ANNs (issue 14): copies each fold's ReLU ANN checkpoint from SRC (a run of
# configs/lowt_cv_warm.json, 16 epochs) without its final.pt, so the recipe resumes it to CONFIG's
# "warm_start" epochs (a resumed run is the same run as one trained that long from the start), then trains
# the quantised-clip ANN, converts and fine-tunes as CONFIG says, and reports into DOCS. About 75 min on 2 cores.
#   SRC=runs/lowt_cv_warm CONFIG=configs/lowt_cv_warm32_direct.json OUT=runs/lowt_cv_warm32_direct \
#     DOCS=docs/results/lowt_cv_warm32_direct bash tools/lowt_cv_relu_longer.sh
# CODING=binary does the same for a binary run (e.g. SRC=runs/lowt_cv_binary_relu_kd_thick6, the whole-brain
# default's path, with CONFIG=configs/lowt_cv_binary_relu32_kd_thick6.json).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-runs/lowt_cv_warm}
CONFIG=${CONFIG:-configs/lowt_cv_warm32_direct.json}
R=${OUT:-runs/lowt_cv_warm32_direct}
DOCS=${DOCS:-docs/results/lowt_cv_warm32_direct}
CODING=${CODING:-ternary}
for fold in 0 1 2 3 4; do
  relu="$R/$CODING/fold_$fold/ann_relu"
  if [ ! -e "$relu/last.pt" ]; then
    mkdir -p "$relu"
    for f in best.pt last.pt log.json log.csv settings.json; do cp "$SRC/$CODING/fold_$fold/ann_relu/$f" "$relu/$f"; done
  fi
done
{ echo start; date -u; uptime; } >> "$R/load.txt"
hipposnn recipe --config "$CONFIG" --data "${DATA:-../shared/data/msd_hippocampus}" --out "$R" --jobs 2 --threads 1
{ echo end; date -u; uptime; } >> "$R/load.txt"
python tools/report_lowt_cv.py --copy-from "$R" --lowt "$DOCS" --coding "$CODING" --reference --figure ''
cp "$R/load.txt" "$DOCS/load.txt"
