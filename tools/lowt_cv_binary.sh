#!/usr/bin/env bash
# The whole-brain default's path in binary coding, cross-validated (issue 14; configs/lowt_cv_binary_kd.json):
# each fold's ReLU ANN of the warm-start CV run (configs/lowt_cv_warm.json, 16 epochs on that fold's training
# crops) is linked in as the warm start, so the recipe trains only the binary quantised-clip ANN (8 epochs),
# converts it with direct input and fine-tunes it at T = 8 with distillation (120 batches); ~1 h on 2 cores.
#   bash tools/lowt_cv_binary.sh      # needs runs/lowt_cv_warm (hipposnn recipe --config configs/lowt_cv_warm.json)
# SRC=none trains each fold's binary ReLU ANN in the run instead (~1.5 h on 2 cores):
#   SRC=none CONFIG=configs/lowt_cv_binary_relu_kd.json OUT=runs/lowt_cv_binary_relu_kd \
#     DOCS=docs/results/lowt_cv_binary_relu_kd bash tools/lowt_cv_binary.sh
# SRC_CODING=binary links a binary run's ReLU ANNs instead (e.g. SRC=runs/lowt_cv_binary_relu32_kd_thick6 with
# CONFIG=configs/lowt_cv_binary_relu32_qkd_thick6.json: the quantised ANNs distilled from them, ~50 min).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-runs/lowt_cv_warm}
SRC_CODING=${SRC_CODING:-ternary}
R=${OUT:-runs/lowt_cv_binary_kd}
DOCS=${DOCS:-docs/results/lowt_cv_binary_kd}
CONFIG=${CONFIG:-configs/lowt_cv_binary_kd.json}
mkdir -p "$R"
if [ "$SRC" != none ]; then
  for fold in 0 1 2 3 4; do
    mkdir -p "$R/binary/fold_$fold"
    ln -sfn "$(cd "$SRC/$SRC_CODING/fold_$fold/ann_relu" && pwd)" "$R/binary/fold_$fold/ann_relu"
  done
fi
{ echo start; date -u; uptime; } >> "$R/load.txt"
hipposnn recipe --config "$CONFIG" --data "${DATA:-../shared/data/msd_hippocampus}" \
  --out "$R" --jobs 2 --threads 1
{ echo end; date -u; uptime; } >> "$R/load.txt"
python tools/report_lowt_cv.py --copy-from "$R" --lowt "$DOCS" --coding binary --reference --figure ''
cp "$R/load.txt" "$DOCS/load.txt"
