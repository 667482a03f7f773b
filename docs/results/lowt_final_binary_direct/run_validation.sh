set -e
cd /work/main
O=docs/results/lowt_final_binary_direct
{ echo start; date -u; uptime; } > $O/validation.load
python tools/lowt_eval.py --data ../shared/data/msd_hippocampus --json $O/validation.json --coding binary --threads 2 --timesteps 8 \
  --model "quantised ANN, L 8=runs/lowt_final_binary/ann_L8/best.pt" \
  --model "converted, Poisson input=runs/lowt_final_binary/converted.pt" \
  --model "converted, regular input=runs/lowt_final_binary/regular/converted.pt" \
  --model "converted, direct input=runs/lowt_final_binary/direct/converted.pt" \
  --model "fine-tuned on Poisson input, lr 1e-3 (before)=runs/lowt_final_binary/finetune_T8_lr1e3/best.pt" \
  --model "direct input, fine-tuned 120 batches lr 1e-4=runs/lowt_final_binary/finetune_T8_direct/best.pt" \
  --model "direct input, fine-tuned 270 batches lr 1e-3=runs/lowt_final_binary/finetune_T8_direct_lr1e3/best.pt" \
  --model "direct input, fine-tuned 120 batches lr 1e-4 + distillation=runs/lowt_final_binary/finetune_T8_direct_kd/best.pt"
python tools/lowt_eval.py --data ../shared/data/msd_hippocampus --json $O/validation_t32_default.json --coding binary --threads 2 --timesteps 32 \
  --model "binary T32 whole-brain default=HippoSNN/hipposnn/models/hipposnn_snn_binary.pt"
{ echo end; date -u; uptime; } >> $O/validation.load
