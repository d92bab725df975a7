#!/usr/bin/env bash
# The main job on the embedded default, end to end: tiny model -> synthetic data -> decode -> train (stage 1, stage 2)
# -> win rate vs the untrained model -> live commentary as WebVTT.
# Run through `make demo`, which provides .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/demo}
CKPT=checkpoints/tiny-qwen3vl
export TOKENIZERS_PARALLELISM=false WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1
mkdir -p "$OUT"
step() { printf '\n==> %s   [%d s]\n' "$*" "$SECONDS"; }

step "1. Build the tiny Qwen3-VL checkpoint"
"$PY" -m streaming_vlm.model.tiny --out "$CKPT" --seed 0

step "2. Generate synthetic football streams"
"$PY" -m data.synthetic --out "$OUT/data" --train-games 6 --eval-games 2 --duration 180 --clips 24 --seed 7
echo "data in $OUT/data (videos/, train_with_seeks.jsonl, clips_with_seeks.jsonl, eval_inf.jsonl)"

step "3. Decode a few seconds of a held-out game through the project's video reader and stream template"
EVAL_VIDEO=$(ls "$OUT"/data/videos/eval/*.mp4 | head -n 1)
"$PY" scripts/demo_decode.py --video "$EVAL_VIDEO" --model_path "$CKPT" --start 20 --seconds 3

step "4. Stage 1: train the tiny model on 8 s windows of the training games (loss curve below)"
"$PY" train.py experiment=smoke_stage1 data.root="$OUT/data" model.name_or_path="$CKPT" output_dir="$OUT/stage1"

step "5. Stage 2: anneal on whole clips, initialised from stage 1"
"$PY" train.py experiment=smoke_stage2 data.root="$OUT/data" model.name_or_path="$CKPT" init_from="$OUT/stage1" \
    output_dir="$OUT/stage2"

# Inference as trained: 2 fps, training's per-frame vision budget and text windows. Sampling at temperature 0.7
# with a fixed seed (reproducible run to run): greedy decoding makes a model this small and this briefly trained
# pick the silence token every second, and two silent commentators would only tie.
INFER=(temperature=0.7 seed=0 window_size=8 text_sink=64 text_sliding_window=64 min_pixels=4096 max_pixels=4096
       max_new_tokens=6)

step "6. Win rate on the held-out games: trained (stage 2) vs untrained model, offline judge, 30 s segments"
mkdir -p "$OUT/eval"
for side in trained untrained; do
    model="$OUT/stage2"
    [ "$side" = untrained ] && model="$CKPT"
    "$PY" -m streaming_vlm.eval generate --reference "$OUT/data/eval_inf.jsonl" --video-root "$OUT/data" \
        --model_path "$model" --out "$OUT/eval/$side.jsonl" "${INFER[@]/#/--set=}"
done
# Inf-Streams-Eval uses 100 s segments with >= 200 words; the 180 s games have ~70 words per 30 s.
"$PY" -m streaming_vlm.eval judge --predictions "$OUT/eval/trained.jsonl" --baseline "$OUT/eval/untrained.jsonl" \
    --reference "$OUT/data/eval_inf.jsonl" --out "$OUT/eval/verdicts.jsonl" --judge offline \
    --segment-seconds 30 --min-words 40 --no-cache | tail -n 1
"$PY" -m streaming_vlm.eval report "$OUT/eval/verdicts.jsonl" --json "$OUT/eval/report.json"
"$PY" - "$OUT/eval/report.json" <<'PYEOF'
import json, sys
o = json.load(open(sys.argv[1]))["overall"]
print(f"win rate, trained vs untrained tiny model (offline judge): {o['win_rate_pct']:.2f}% "
      f"({o['model_votes']} of {o['votes']} votes; baseline {o['baseline_votes']}, ties {o['ties']}, "
      f"invalid {o['invalid']}, missing {o['missing_votes']})")
PYEOF

step "7. Live commentary on a held-out game with the trained model -> $OUT/commentary.vtt"
"$PY" -m streaming_vlm.inference.inference --model_path "$OUT/stage2" --video_path "$EVAL_VIDEO" \
    --output_path "$OUT/commentary.vtt" "${INFER[@]/#/--}"
head -n 20 "$OUT/commentary.vtt"

printf '\ndemo finished in %d s\n' "$SECONDS"
