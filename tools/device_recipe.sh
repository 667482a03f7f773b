#!/usr/bin/env bash
# Runs the reference recipe (configs/reference.json) on a lent GPU machine in one call, then packs
# the results into $OUT. Reproduce on any CUDA machine with the data in DATA:
#   DATA=path/to/msd_hippocampus OUT=out bash tools/device_recipe.sh
# The same recipe runs on a CPU with: hipposnn recipe --config configs/reference.json --data DIR --out RUN
set -u
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.devdata/msd_hippocampus}
RUN=${RUN:-/tmp/run}
OUT=${OUT:-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/HippoSNN" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
start=$(date +%s)
timeout 150 python3 -m hipposnn.cli recipe --config configs/reference.json --data "$DATA" --out /tmp/smoke \
  --jobs 2 --threads 1 --smoke --device "$DEVICE" || { echo "SMOKE FAILED"; exit 1; }
echo "smoke ok after $(( $(date +%s) - start )) s"
timeout "${LIMIT:-450}" python3 -m hipposnn.cli recipe --config configs/reference.json --data "$DATA" --out "$RUN" \
  --jobs "${JOBS:-8}" --threads 1 --device "$DEVICE" --deadline "${DEADLINE:-300}"
echo "recipe exit $? after $(( $(date +%s) - start )) s"
cd "$RUN" || exit 1
tar czf "$OUT/results.tar.gz" --exclude='*.pt' .
tar czf "$OUT/models_final.tar.gz" $(ls */fold_all/*/best.pt */fold_all/ann/converted.pt 2>/dev/null)
for c in binary ternary; do
  tar czf "$OUT/ann_$c.tar.gz" $(ls $c/fold_[0-9]/ann/best.pt $c/fold_[0-9]/ann/converted.pt 2>/dev/null | head -8)
  tar czf "$OUT/ft_$c.tar.gz" $(ls $c/fold_[0-9]/finetune_T32/best.pt 2>/dev/null)
done
ls -la "$OUT"
