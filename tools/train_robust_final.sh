#!/usr/bin/env bash
# The shipped site-robust models (issue 11): the reference ANN of the coding (commit 8cbf740) trained on
# for 10 more epochs with site augmentation (hipposnn.augment), then early-stop conversion and 1 epoch of
# BPTT fine-tuning at T=32 with the same augmentation. CPU, 2 threads; rerun with RESUME=1 to continue.
#   DATA=../shared/data/msd_hippocampus OUT=runs/robust bash tools/train_robust_final.sh
#   CODING=binary OUT=runs/robust_binary bash tools/train_robust_final.sh
# then: python tools/ship_robust_models.py --run runs/robust [--coding binary --run runs/robust_binary]
# THICK=6 lets the site augmentation coarsen one axis up to 6 mm (default 3, as these models were trained); ANN_ONLY=1
# stops after the ANN. The shipped binary ANN (the QC twin of the whole-brain default) since 2026-12-06:
#   CODING=binary THICK=6 ANN_ONLY=1 OUT=runs/twin_ref bash tools/train_robust_final.sh
#   python tools/ship_robust_models.py --coding binary --only ann --run runs/twin_ref --site-thick-mm 6 ...
set -euo pipefail
DATA=${DATA:-../shared/data/msd_hippocampus}
R=${OUT:-runs/robust}
EPOCHS=${EPOCHS:-10}
CODING=${CODING:-ternary}
THICK=${THICK:-3}
mkdir -p "$R"
RES=()
[ "${RESUME:-0}" = 1 ] && RES=(--resume)
[ -f "$R/ann_init.pt" ] || git show 8cbf740:HippoSNN/hipposnn/models/hipposnn_ann_${CODING}.pt > "$R/ann_init.pt"
[ -f "$R/ann_${CODING}/final.pt" ] || hipposnn train-ann --data "$DATA" --out "$R/ann_${CODING}" --init "$R/ann_init.pt" \
  --coding "$CODING" --site-augment --site-thick-mm "$THICK" --augment --epochs "$EPOCHS" --lr 5e-4 --batch-size 32 \
  --threads 2 --seed 0 "${RES[@]}"
[ "${ANN_ONLY:-0}" = 1 ] && exit 0
[ -f "$R/converted.pt" ] || hipposnn convert --data "$DATA" --checkpoint "$R/ann_${CODING}/best.pt" --out "$R" \
  --timesteps 200 --threshold-scale 0.7 --percentile 99.9 --slices 32 --coding "$CODING" --seed 0
[ -f "$R/finetune_T32/final.pt" ] || hipposnn finetune --data "$DATA" --checkpoint "$R/converted.pt" \
  --out "$R/finetune_T32" --epochs 1 --batch-size 32 --lr 0.0005 --timesteps 32 --coding "$CODING" --augment \
  --site-augment --site-thick-mm "$THICK" --eval-every 45 --threads 2 --seed 0 "${RES[@]}"
