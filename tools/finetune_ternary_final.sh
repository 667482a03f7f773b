#!/usr/bin/env bash
# The final ternary SNN (HippoSNN/hipposnn/models/hipposnn_snn_ternary.pt): early-stop conversion of the
# ternary fold-"all" ANN of the reference run (ANN_BEST), then 1 epoch of fine-tuning at T=32 on a CPU.
#   ANN_BEST=RUN/ternary/fold_all/ann/best.pt DATA=../shared/data/msd_hippocampus bash tools/finetune_ternary_final.sh
set -euo pipefail
DATA=${DATA:-../shared/data/msd_hippocampus}
R=${OUT:-runs/ternary_all}
ANN_BEST=${ANN_BEST:-$R/ann_best.pt}
hipposnn convert --data "$DATA" --checkpoint "$ANN_BEST" --out "$R" --timesteps 200 --threshold-scale 0.7 \
  --percentile 99.9 --slices 32 --coding ternary --seed 0
hipposnn finetune --data "$DATA" --checkpoint "$R/converted.pt" --out "$R/finetune_T32" --epochs 1 --batch-size 32 \
  --lr 0.0005 --timesteps 32 --coding ternary --augment --eval-every 45 --seed 0
