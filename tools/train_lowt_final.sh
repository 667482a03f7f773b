#!/usr/bin/env bash
# The shipped low-latency SNN (issue 14), warm-started: the shipped site-robust ternary ANN becomes a
# quantised-clip ANN (L = 8; clips from the CLIP_PCT-th percentile of its activations, 99.9 unless told)
# trained on for a few epochs with the in-plane and site augmentation, converted from its clips (no
# balancing; membranes start at half threshold), then BPTT fine-tuning at T = 8 with the same augmentation. The path is the one the
# 5-fold CV of configs/lowt_cv.json measured from random weights (docs/models.md); the warm start is what
# the single-split pilot used (tools/lowt_pilot.sh). CPU, THREADS (2); RESUME=1 continues a stopped run.
#   OUT=runs/lowt_final bash tools/train_lowt_final.sh
#   CODING=binary OUT=runs/lowt_final_binary bash tools/train_lowt_final.sh   # from the site-robust binary ANN
#   LR=1e-3 FT_EPOCHS=2 BATCHES=270 FT=finetune_T8_lr1e3 OUT=runs/lowt_final bash tools/train_lowt_final.sh
#     # fine-tunes the same conversion again, as the CV's best fine-tuning (configs/lowt_cv_long_lr1e3.json)
#   INPUT=direct FT=finetune_T8_direct OUT=runs/lowt_final bash tools/train_lowt_final.sh
#     # the same quantised ANN converted with direct input (into OUT/direct/), fine-tuned gently
#     # (configs/lowt_cv_warm_direct.json in the CV)
#   INPUT=regular FT=finetune_T8_regular OUT=runs/lowt_final bash tools/train_lowt_final.sh
#     # regular input spikes (into OUT/regular/), fine-tuned with the shipped model's budget
#   CODING=binary INPUT=direct DISTILL=1 THICK=6 FT=finetune_T8_direct_kd OUT=runs/lowt_final_binary_thick \
#     bash tools/train_lowt_final.sh   # the whole-brain default until 2026-12-06: slices up to 6 mm thick
#   INIT=/tmp/ann_binary_f79a31bf.pt CODING=binary INPUT=direct DISTILL=1 THICK=6 CLIP_PCT=90 THREADS=1 \
#     FT=finetune_T8_direct_kd OUT=runs/lowt_final_binary_p90 bash tools/train_lowt_final.sh
#     # the whole-brain default since then: the same with the clips starting at the 90th percentile
#   INIT=/tmp/ann_binary_f79a31bf.pt CODING=binary INPUT=direct DISTILL=1 THICK=6 CLIP_PCT=90 EMA=0.998 THREADS=1 \
#     FT=finetune_T8_direct_kd OUT=runs/lowt_final_binary_p90_ema bash tools/train_lowt_final.sh
#     # the same with the quantised ANN validated and kept as a moving average of its weights (docs/models.md)
#   INIT=/tmp/ann_binary_f79a31bf.pt TEACHER=/tmp/ann_binary_f79a31bf.pt CODING=binary INPUT=direct DISTILL=1 THICK=6 \
#     CLIP_PCT=90 THREADS=1 FT=finetune_T8_direct_kdrelu OUT=runs/lowt_final_binary_p90 bash tools/train_lowt_final.sh
#     # the default's conversion fine-tuned again, distilled from the ReLU ANN it started from (TEACHER)
# then: python tools/ship_lowt_model.py --final runs/lowt_final/finetune_T8 --ann runs/lowt_final/ann_L8
#       [--coding binary --final runs/lowt_final_binary/finetune_T8 --ann runs/lowt_final_binary/ann_L8]
set -euo pipefail
DATA=${DATA:-../shared/data/msd_hippocampus}
R=${OUT:-runs/lowt_final}
EPOCHS=${EPOCHS:-6}
BATCHES=${BATCHES:-120}
FT_EPOCHS=${FT_EPOCHS:-1}  # an epoch is ~135 batches of 32: BATCHES above that needs more epochs
LR=${LR:-1e-4}             # fine-tuning learning rate (the CV found 1e-3 for 2 epochs better than 1e-4)
FT=${FT:-finetune_T8}      # fine-tuning folder under OUT (a second fine-tuning of the same conversion)
CODING=${CODING:-ternary}
DISTILL=${DISTILL:-0}      # weight of the distillation from the quantised ANN during fine-tuning (0: none)
TEACHER=${TEACHER:-}       # with DISTILL: the ANN to distil from instead of the quantised ANN (e.g. INIT)
INPUT=${INPUT:-poisson}    # what the SNN's first layer receives: Poisson or regular spikes, or the image (direct)
THICK=${THICK:-3}          # site augmentation's thickest one-axis voxel in mm (3: as before it was an option)
THREADS=${THREADS:-2}      # torch threads of each stage
CLIP_PCT=${CLIP_PCT:-99.9} # percentile of the ANN's ReLU activations each clip starts at (99.9: as before it was an option)
EMA=${EMA:-0}              # quantised ANN: decay of the moving average of its weights that is validated and kept (0: off)
CONV=$R                    # the conversion's folder: OUT itself for Poisson input, OUT/INPUT for the others
[ "$INPUT" = poisson ] || CONV=$R/$INPUT
mkdir -p "$R"
RES=()
[ "${RESUME:-0}" = 1 ] && RES=(--resume)
TEACH=()
[ -n "$TEACHER" ] && TEACH=(--teacher "$TEACHER")
# The warm start: the shipped site-robust ANN of the coding. The shipped binary T = 8 SNN started from the binary
# ANN of SHA-256 f79a31bf61aa, replaced since; to retrain it exactly: git show f9f0167:HippoSNN/hipposnn/models/
# hipposnn_ann_binary.pt > /tmp/ann_binary_f79a31bf.pt and INIT=/tmp/ann_binary_f79a31bf.pt.
INIT=${INIT:-HippoSNN/hipposnn/models/hipposnn_ann_${CODING}.pt}
[ -f "$R/ann_L8/final.pt" ] || hipposnn train-ann --data "$DATA" --out "$R/ann_L8" --init "$INIT" --quant-levels 8 \
  --coding "$CODING" --augment --site-augment --site-thick-mm "$THICK" --clip-percentile "$CLIP_PCT" --ema "$EMA" --epochs "$EPOCHS" --lr 3e-4 --batch-size 32 --threads "$THREADS" --seed 0 "${RES[@]}"
[ -f "$CONV/converted.pt" ] || hipposnn convert --data "$DATA" --checkpoint "$R/ann_L8/best.pt" --out "$CONV" \
  --from-clip --coding "$CODING" --input "$INPUT" --seed 0
[ -f "$R/$FT/final.pt" ] || hipposnn finetune --data "$DATA" --checkpoint "$CONV/converted.pt" \
  --out "$R/$FT" --epochs "$FT_EPOCHS" --max-batches "$BATCHES" --batch-size 32 --lr "$LR" --timesteps 8 --coding "$CODING" \
  --augment --site-augment --site-thick-mm "$THICK" --distill "$DISTILL" "${TEACH[@]}" --eval-every 40 --threads "$THREADS" --seed 0 "${RES[@]}"
