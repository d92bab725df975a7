#!/usr/bin/env bash
# The main job on the embedded default, end to end: tiny model -> synthetic data -> decode -> (train -> eval -> VTT).
# Run through `make demo`, which provides .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/demo}
CKPT=checkpoints/tiny-qwen3vl
export TOKENIZERS_PARALLELISM=false WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1
mkdir -p "$OUT"
step() { printf '\n==> %s\n' "$*"; }

step "1. Build the tiny Qwen3-VL checkpoint"
"$PY" -m streaming_vlm.model.tiny --out "$CKPT" --seed 0

step "2. Generate synthetic football streams"
"$PY" -m data.synthetic --out "$OUT/data" --train-games 6 --eval-games 2 --duration 180 --clips 24 --seed 7
echo "data in $OUT/data (videos/, train_with_seeks.jsonl, clips_with_seeks.jsonl, eval_inf.jsonl)"

step "3. Decode a few seconds of a held-out game through the project's video reader and stream template"
EVAL_VIDEO=$(ls "$OUT"/data/videos/eval/*.mp4 | head -n 1)
"$PY" scripts/demo_decode.py --video "$EVAL_VIDEO" --model_path "$CKPT" --start 20 --seconds 3
