#!/usr/bin/env bash
# Low-latency path pilot (issue 14, first part): ONE split, not cross-validation.
#
# Warm-starts quantised-clip ANNs (L = 8, then 4) from the shipped ternary ANN, converts them from
# their learned clips (thresholds = clips, membranes start at half threshold; soft reset, and the
# reset-to-zero variant), scores ANN and SNNs at T = L and 2L on the validation cases of the
# final-model split (no --fold, seed 0; tools/lowt_eval.py), fine-tunes each SNN briefly at T = L,
# and scores the shipped models on the same cases for comparison. Raw JSON goes to
# docs/results/lowt_pilot/ (table: python tools/lowt_table.py). One torch thread throughout (the
# machine is shared). Parts, each on by default and switched off with 0:
#   MAIN    ANNs, conversions, short fine-tuning, shipped models   (~1 h on a busy 2-core CPU)
#   EXTRAS  Poisson-input diagnostic, T = 200 balancing of the L = 8 ANN, rate penalty   (~15 min)
#   LONG    3-epoch fine-tuning at T = L   (~40 min)
#   ZERO    short fine-tuning of the reset-to-zero SNN at T = 8   (~10 min)
#
#   bash tools/lowt_pilot.sh                         # all of it
#   MAIN=0 LONG=0 ZERO=0 bash tools/lowt_pilot.sh    # only the extras (they need the MAIN runs)
#   LEVELS=8 EPOCHS=3 bash tools/lowt_pilot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/HippoSNN:$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-$PWD/../shared/data/msd_hippocampus}
RUN=${RUN:-$PWD/runs/lowt_pilot}
OUT=${OUT:-$PWD/docs/results/lowt_pilot}
EPOCHS=${EPOCHS:-6}
FT_BATCHES=${FT_BATCHES:-60}
INIT=HippoSNN/hipposnn/models/hipposnn_ann_ternary.pt
mkdir -p "$RUN" "$OUT"
hs() { python -m hipposnn "$@"; }

if [ "${MAIN:-1}" = 1 ]; then
for L in ${LEVELS:-8 4}; do
  # stage 1: quantised-clip ANN, warm start (clips from the 99.9th percentile of the ReLU activations)
  hs train-ann --data "$DATA" --out "$RUN/ann_L$L" --init "$INIT" --quant-levels "$L" --coding ternary \
    --augment --epochs "$EPOCHS" --lr 3e-4 --batch-size 32 --threads 1 --overwrite
  cp "$RUN/ann_L$L/log.json" "$OUT/ann_L${L}_log.json"
  # stage 2: conversion from the clip, no balancing pass (soft reset; and reset to zero)
  hs convert --data "$DATA" --checkpoint "$RUN/ann_L$L/best.pt" --out "$RUN/clip_L$L" --from-clip --coding ternary
  hs convert --data "$DATA" --checkpoint "$RUN/ann_L$L/best.pt" --out "$RUN/clip_L${L}_zero" --from-clip \
    --reset zero --coding ternary
  python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_L$L.json" --timesteps "$L" $((2 * L)) \
    --model "ann_L$L=$RUN/ann_L$L/best.pt" --model "clip_L$L=$RUN/clip_L$L/converted.pt" \
    --model "clip_L${L}_zero=$RUN/clip_L${L}_zero/converted.pt"
done

for L in ${LEVELS:-8 4}; do
  # stage 3: BPTT fine-tuning at T = L (triangle surrogate), a short budget
  hs finetune --data "$DATA" --checkpoint "$RUN/clip_L$L/converted.pt" --out "$RUN/ft_L$L" --timesteps "$L" \
    --coding ternary --augment --epochs 1 --max-batches "$FT_BATCHES" --batch-size 32 --lr 1e-4 --threads 1 \
    --overwrite
  cp "$RUN/ft_L$L/log.json" "$OUT/ft_L${L}_log.json"
  python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_ft_L$L.json" --timesteps "$L" \
    --model "ft_L$L=$RUN/ft_L$L/best.pt"
done

# the shipped models on the same cases: ANN, and the T = 32 fine-tuned SNN at T = 8 and 32
python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_shipped.json" --timesteps 8 32 \
  --model "shipped_ann=HippoSNN/hipposnn/models/hipposnn_ann_ternary.pt" \
  --model "shipped_snn=HippoSNN/hipposnn/models/hipposnn_snn_ternary.pt"
fi

# --- extras (run after the above) ----------------------------------------------------------------
if [ "${EXTRAS:-1}" = 1 ]; then
  # how much of the T = 8 loss is the Poisson input alone: the ANNs fed the T-step mean of their input spikes
  python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_poisson_input_L8.json" --poisson-ann 4 8 16 32 \
    --model "ann_L8=$RUN/ann_L8/best.pt" --model "shipped_ann=$INIT"
  # the paper's path on the same quantised ANN: balancing at T = 200 (reference settings), run at T = 8
  hs convert --data "$DATA" --checkpoint "$RUN/ann_L8/best.pt" --out "$RUN/bal200_L8" --timesteps 200 \
    --percentile 99.9 --threshold-scale 0.7 --coding ternary
  python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_balanced_L8.json" --timesteps 8 \
    --model "balanced200_L8=$RUN/bal200_L8/converted.pt"
  # firing-rate penalty: the same fine-tuning at T = 8 with loss += 0.2 x mean firing rate
  hs finetune --data "$DATA" --checkpoint "$RUN/clip_L8/converted.pt" --out "$RUN/ft_L8_rate" --timesteps 8 \
    --coding ternary --augment --epochs 1 --max-batches "$FT_BATCHES" --batch-size 32 --lr 1e-4 --threads 1 \
    --rate-penalty 0.2 --overwrite
  cp "$RUN/ft_L8_rate/log.json" "$OUT/ft_L8_rate_log.json"
  python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_ft_L8_rate.json" --timesteps 8 \
    --model "ft_L8_rate0.2=$RUN/ft_L8_rate/best.pt"
fi

# --- longer fine-tuning at T = L: 3 epochs (405 batches of 32), lr 2e-4, validation after each epoch ------
if [ "${LONG:-1}" = 1 ]; then
  for L in ${LEVELS:-8 4}; do
    hs finetune --data "$DATA" --checkpoint "$RUN/clip_L$L/converted.pt" --out "$RUN/ft_L${L}_long" \
      --timesteps "$L" --coding ternary --augment --epochs 3 --batch-size 32 --lr 2e-4 --threads 1 --overwrite
    cp "$RUN/ft_L${L}_long/log.json" "$OUT/ft_L${L}_long_log.json"
    python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_ft_L${L}_long.json" --timesteps "$L" \
      --model "ft_L${L}_long=$RUN/ft_L${L}_long/best.pt" --model "ft_L${L}_long_final=$RUN/ft_L${L}_long/final.pt"
  done
fi

# --- reset to zero, fine-tuned: the short fine-tuning above on the hard-reset SNN (plain-autograd BPTT) --
if [ "${ZERO:-1}" = 1 ]; then
  for L in ${ZERO_LEVELS:-8}; do
    hs finetune --data "$DATA" --checkpoint "$RUN/clip_L${L}_zero/converted.pt" --out "$RUN/ft_L${L}_zero" \
      --timesteps "$L" --coding ternary --augment --epochs 1 --max-batches "$FT_BATCHES" --batch-size 32 --lr 1e-4 \
      --threads 1 --overwrite
    cp "$RUN/ft_L${L}_zero/log.json" "$OUT/ft_L${L}_zero_log.json"
    python tools/lowt_eval.py --data "$DATA" --json "$OUT/eval_ft_L${L}_zero.json" --timesteps "$L" \
      --model "ft_L${L}_zero=$RUN/ft_L${L}_zero/best.pt"
  done
fi
