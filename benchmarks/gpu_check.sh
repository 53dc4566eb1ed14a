#!/usr/bin/env bash
# GPU check: on a machine with one CUDA GPU, synthesise a small hospital, run the real stages with the
# `gpu` profiles (train bounded to a few epochs) and print the model_learning figures (macro AUROC with
# CI, per finding, pointing game, organ Dice vs truth, the HU-histogram baseline). Sized for < 8 min on
# one H100. Usage: bash benchmarks/gpu_check.sh [STUDIES] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
studies=${1:-240}
epochs=${2:-12}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False)"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, flush=True)
PY
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null || true
export EXACT_MODE=${EXACT_MODE:-test}
start=$(date +%s)
"$PY" benchmarks/model_learning.py --studies "$studies" \
  --set build_dataset.profile=gpu --set train.profile=gpu \
  --set "train.profiles.gpu.epochs=$epochs" --set train.profiles.gpu.workers=4 \
  --set evaluate.bootstrap=200 --set evaluate.explain_max=2
echo "gpu_check: $(( $(date +%s) - start )) s in all"
