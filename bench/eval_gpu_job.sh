#!/usr/bin/env bash
# `eval generate` over many short videos on one GPU vs one CLI run: videos/hour and time per video.
#
#   bash bench/eval_gpu_job.sh [--tiny] [--videos N] [--seconds S] [--out DIR]
#
# GPU (default): a random-init Qwen3-VL-2B (`python -m streaming_vlm.model.tiny --size 2b`, bf16) streams N synthetic
# games of S seconds each through `eval generate --devices 0` (one engine, the model loaded once), after one
# `python -m streaming_vlm.inference.inference` run on the first game (the per-video cost a user pays running the CLI
# once per video: process start, model load, stream). --tiny: the tiny checkpoint on the CPU, to check the script.
# Prints a markdown table (also written to OUT/eval_gpu.md); the numbers go in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
TINY=0; VIDEOS=8; SECONDS_PER_VIDEO=60; OUT=${OUT:-/tmp/eval_gpu_job}
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) TINY=1; SECONDS_PER_VIDEO=10 ;;
    --videos) VIDEOS=$2; shift ;;
    --seconds) SECONDS_PER_VIDEO=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: bench/eval_gpu_job.sh [--tiny] [--videos N] [--seconds S] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
mkdir -p "$OUT"
if [ "$TINY" = 1 ]; then
  SIZE=tiny; DTYPE=float32; DEVICE=cpu; SHARD=(--workers 1); VIDEO_SIZE=tiny
  ENGINE=(temperature=0 window_size=4 max_new_tokens=4 device=cpu)
else
  SIZE=2b; DTYPE=bfloat16; DEVICE=cuda:0; SHARD=(--devices 0); VIDEO_SIZE=medium
  ENGINE=(temperature=0 window_size=16 max_new_tokens=20 attn_implementation=sdpa)
fi
CKPT=$OUT/ckpt-$SIZE
[ -f "$CKPT/config.json" ] || "$PY" -m streaming_vlm.model.tiny --out "$CKPT" --size "$SIZE" --dtype "$DTYPE" >/dev/null
rm -rf "$OUT/data" "$OUT/generated.jsonl" "$OUT/generated.jsonl.parts"
"$PY" -m data.synthetic --out "$OUT/data" --train-games 0 --eval-games "$VIDEOS" --eval-duration "$SECONDS_PER_VIDEO" \
  --clips 0 --size "$VIDEO_SIZE" --seed 3 >/dev/null
FIRST=$OUT/data/$("$PY" -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['video'])" \
  "$OUT/data/eval_inf.jsonl")

# one CLI run on the first video: process start + model load + stream
t0=$(date +%s.%N)
"$PY" -m streaming_vlm.inference.inference --model_path "$CKPT" --video_path "$FIRST" --output_path "$OUT/one.vtt" \
  --device "$DEVICE" --no_progress "${ENGINE[@]/#/--}" >"$OUT/cli.log" 2>&1
t1=$(date +%s.%N)
# eval generate over all videos: one process, the model loaded once
"$PY" -m streaming_vlm.eval generate --reference "$OUT/data/eval_inf.jsonl" --video-root "$OUT/data" \
  --out "$OUT/generated.jsonl" --model_path "$CKPT" "${SHARD[@]}" "${ENGINE[@]/#/--set=}" 2>"$OUT/generate.log"
t2=$(date +%s.%N)

"$PY" - "$t0" "$t1" "$t2" "$VIDEOS" "$SECONDS_PER_VIDEO" "$SIZE" "$DEVICE" "$OUT" <<'PYEOF'
import re, subprocess, sys
t0, t1, t2, videos, seconds = map(float, sys.argv[1:6])
size, device, out = sys.argv[6:9]
cli, gen = t1 - t0, t2 - t1
streams = [float(s) for s in re.findall(r"^generated .*? in ([\d.]+) s$", open(f"{out}/generate.log").read(), re.M)]
assert len(streams) == int(videos), f"expected {int(videos)} 'generated' lines in {out}/generate.log"
where = device
if device.startswith("cuda"):
    where = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                           capture_output=True, text=True).stdout.strip() or device
rows = [
    ("one CLI run (process start + load + stream), s/video", f"{cli:.1f}"),
    (f"eval generate, {int(videos)} videos: wall, s", f"{gen:.1f}"),
    ("eval generate: wall per video, s", f"{gen / videos:.1f}"),
    ("eval generate: stream per video (mean, min-max), s",
     f"{sum(streams) / len(streams):.1f} ({min(streams):.1f}-{max(streams):.1f})"),
    ("eval generate: videos/hour", f"{3600 * videos / gen:.0f}"),
    ("one CLI run per video: videos/hour", f"{3600 / cli:.0f}"),
    ("per-video time, generate / CLI", f"{gen / videos / cli:.2f}"),
    ("video seconds per wall second (generate)", f"{videos * seconds / gen:.2f}"),
]
table = [f"`eval generate` vs one CLI run: {size} model, {int(videos)} synthetic games of {seconds:g} s, {where}", "",
         "| measure | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in rows]
text = "\n".join(table) + "\n"
open(f"{out}/eval_gpu.md", "w").write(text)
print(text)
PYEOF
