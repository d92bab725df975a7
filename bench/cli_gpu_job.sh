#!/usr/bin/env bash
# The CLI as users run it, on real H.264 files, in one job (~11 min on one H200: start it with bench/device_job.sh),
# from the repo root:
#
#   bash bench/cli_gpu_job.sh           # GPU: 1080p50 (120 s) and 720p30 (240 s) files, random-init 2B and 4B
#   bash bench/cli_gpu_job.sh --tiny    # CPU dry run of every step: tiny model, small short files
#   bash bench/cli_gpu_job.sh --startup # GPU, ~6 min: the 2B on one short 720p30 file, cold then warm twice, with
#                                       # the CLI's `start-up:` line (where a start's seconds go); then cold and warm
#                                       # again with torch's caching precompile (bench/precompile_hook)
#
# Steps: install carried wheels (.whl/*.whl -> /tmp/site); write the two files with PyAV (bench/video_files.py, not
# the project's synthetic generator; segments on all cores) and the random-init checkpoints (python -m streaming_vlm.model.tiny), in
# parallel; the bench's random-frame mode briefly (the same-machine baseline, in compile caches of its own); run the
# CLI with only the seed's flags (bench/stream_latency.py --cli): 2B on the 1080p50 file with empty compile caches
# (cold start), 2B on the 720p30 file (warm: same shapes, caches filled), 4B on the 1080p50 file (cold for the 4B);
# then, while time is left, 2B on the 1080p50 file again (warm), and, where .whl_tf holds another transformers wheel,
# 2B on a 30-s 720p30 file twice with that transformers (first, then warm). Steps stop short of JOB_BUDGET_S (default 660 s);
# the table is printed either way. Logs, VTTs and JSON rows go to $OUT (default outputs/cli_gpu_job).
set -u
cd "$(dirname "$0")/.."
TINY=0; STARTUP=0
for a in "$@"; do case $a in --tiny) TINY=1 ;; --startup) STARTUP=1 ;; *) echo "unknown option $a"; exit 2 ;; esac; done
OUT=${OUT:-outputs/cli_gpu_job}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
fi
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# .whl_tf: another transformers wheel (e.g. the newest that pyproject allows, which a fresh `pip install` gets): two
# more warm-start rows run with it, installed apart (/tmp/tf_other) so that every other row keeps the host's
TF_OTHER=
if [ $STARTUP = 0 ] && ls .whl_tf/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tf_other .whl_tf/*.whl \
    && TF_OTHER=/tmp/tf_other || echo "the .whl_tf install failed: its rows are skipped"
fi
WORK=${WORK:-/tmp/cli_gpu_job}; rm -rf "$WORK"; mkdir -p "$WORK"
# cold start = empty compile caches (Inductor's FX graph / kernel caches and Triton's); later runs reuse them
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor TRITON_CACHE_DIR=$WORK/triton
T0=$SECONDS
BUDGET=${JOB_BUDGET_S:-660}
left() { echo $((BUDGET - (SECONDS - T0))); }
log() { echo "[cli_gpu_job +$((SECONDS - T0))s] $*" | tee -a "$OUT/job.log"; }

if [ $TINY = 1 ]; then
  SIZES=(tiny tiny); V1=(--width 320 --height 180 --fps 50 --seconds 6); V2=(--width 256 --height 144 --fps 30 --seconds 8)
  [ $STARTUP = 1 ] && V1=(--width 256 --height 144 --fps 50 --seconds 2)
  BUDGET=${JOB_BUDGET_S:-3600}; BENCH=(--smoke --modes streaming --minutes 0.15 --check_seconds 2 --record "$OUT/bench.md")
else
  SIZES=(2b 4b); V1=(--width 1920 --height 1080 --fps 50 --seconds 120); V2=(--width 1280 --height 720 --fps 30 --seconds 240)
  [ $STARTUP = 1 ] && V1=(--width 256 --height 144 --fps 50 --seconds 2) && V2=(--width 1280 --height 720 --fps 30 --seconds 30)
  BENCH=(--sizes 2b --modes streaming --minutes 1 --check_seconds 4 --record "$OUT/bench.md")
fi
"$PY" -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'av', av.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" | tee -a "$OUT/job.log"

log "writing files and checkpoints"
"$PY" bench/video_files.py --out "$WORK/v1080p50.mp4" "${V1[@]}" > "$OUT/make_v1080p50.log" 2>&1 & p1=$!
"$PY" bench/video_files.py --out "$WORK/v720p30.mp4" "${V2[@]}" > "$OUT/make_v720p30.log" 2>&1 & p2=$!
DTYPE=bfloat16; [ $TINY = 1 ] && DTYPE=float32
"$PY" -m streaming_vlm.model.tiny --size "${SIZES[0]}" --dtype $DTYPE --out "$WORK/ckpt_a" > "$OUT/ckpt_a.log" 2>&1 & p3=$!
p4=; p5=
[ -n "$TF_OTHER" ] && { "$PY" bench/video_files.py --out "$WORK/v720p30_30s.mp4" --width 1280 --height 720 --fps 30 \
  --seconds 30 > "$OUT/make_v720p30_30s.log" 2>&1 & p5=$!; }
[ $STARTUP = 1 ] || { "$PY" -m streaming_vlm.model.tiny --size "${SIZES[1]}" --dtype $DTYPE --seed 1 --out "$WORK/ckpt_b" \
  > "$OUT/ckpt_b.log" 2>&1 & p4=$!; }
for p in $p1 $p2 $p3 $p4 $p5; do wait $p || { log "a preparation step failed (see $OUT/*.log)"; tail -n 3 "$OUT"/*.log; exit 1; }; done
cat "$OUT"/make_*.log | tee -a "$OUT/job.log"
log "prepared"

A=${SIZES[0]^^}; B=${SIZES[1]^^}
cli() {  # label model video min_seconds_left
  if [ "$(left)" -lt "$4" ]; then log "skipped (budget): $1"; return; fi
  log "CLI: $1"
  "$PY" bench/stream_latency.py --cli --label "$1" --model_path "$2" --video "$3" --out_dir "$OUT" \
    --cli_timeout $(( $(left) - 20 )) 2>&1 | grep "^json: " | sed 's/^json: //' >> "$OUT/cli_rows.jsonl"
  tail -1 "$OUT/cli_rows.jsonl" | cut -c1-400
  grep -a -h -o "start-up .*" "$OUT/${1// /_}.log" 2>/dev/null | tee -a "$OUT/job.log"  # the CLI's own split
}
if [ $STARTUP = 1 ]; then
  for run in cold warm "warm again"; do
    cli "$A 720p30 30 s $run" "$WORK/ckpt_a" "$WORK/v720p30.mp4" 30
  done
  # the probe: torch's caching precompile (Dynamo's frames saved too), cold then warm, in caches of its own
  export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor_pc TRITON_CACHE_DIR=$WORK/triton_pc TORCH_CACHING_PRECOMPILE=1
  export PYTHONPATH=$PWD/bench/precompile_hook:$PYTHONPATH
  for run in "precompile cold" "precompile warm"; do
    cli "$A 720p30 30 s $run" "$WORK/ckpt_a" "$WORK/v720p30.mp4" 100
    grep -a -o "precompile hook.*" "$OUT/${A}_720p30_30_s_${run// /_}.log"
  done
  exit 0
fi
# the bench's random-frame row FIRST, the same-machine baseline the CLI rows are read against (machines differ by
# up to 2x in host-bound stages); in caches of its own, so that the CLI's first run still starts cold
# it gets what the four CLI runs (~330 s on an H200) leave, at most 300 s
if [ "$(left)" -gt 420 ] || [ $TINY = 1 ]; then
  bench_s=$(( $(left) - 330 )); [ $bench_s -gt 300 ] && bench_s=300
  log "bench, random frames (at most $bench_s s)"
  TORCHINDUCTOR_CACHE_DIR=$WORK/inductor_bench TRITON_CACHE_DIR=$WORK/triton_bench timeout $bench_s \
    "$PY" bench/stream_latency.py "${BENCH[@]}" --out_dir "$OUT" > "$OUT/bench.log" 2>&1 \
    || log "bench exited $? (see $OUT/bench.log)"
  grep -A4 "^| size" "$OUT/bench.log" | head -6
else
  log "skipped (budget): bench"
fi
# where the CLI's "imports" phase goes on this host: the CLI's own imports under -X importtime (after the bench, so
# the files are in the page cache as a warm start finds them)
"$PY" -X importtime -c "import time; t = time.perf_counter(); import streaming_vlm.inference.inference; import torch; \
import streaming_vlm.inference.engine, streaming_vlm.inference.frames, streaming_vlm.inference.output, \
streaming_vlm.model.loading; print(f'CLI imports {time.perf_counter() - t:.2f} s')" 2> "$OUT/importtime.txt" | tee -a "$OUT/job.log"
sort -t'|' -k2 -n "$OUT/importtime.txt" | tail -12 | tee -a "$OUT/job.log"
cli "$A 1080p50 cold" "$WORK/ckpt_a" "$WORK/v1080p50.mp4" 60
cli "$A 720p30 warm" "$WORK/ckpt_a" "$WORK/v720p30.mp4" 60
cli "$B 1080p50 cold" "$WORK/ckpt_b" "$WORK/v1080p50.mp4" 60
cli "$A 1080p50 warm" "$WORK/ckpt_a" "$WORK/v1080p50.mp4" 60
if [ -n "$TF_OTHER" ]; then  # the same caches: the first run may compile what differs (transformers' vision blocks)
  tf=$(PYTHONPATH=$TF_OTHER:$PYTHONPATH "$PY" -c "import transformers; print(transformers.__version__)")
  for run in first warm; do
    PYTHONPATH=$TF_OTHER:$PYTHONPATH cli "$A 720p30 30 s transformers $tf $run" "$WORK/ckpt_a" "$WORK/v720p30_30s.mp4" 40
  done
fi

log "done"
echo
echo "## The CLI as users run it (seed flags: --fps 2 --attn_implementation auto --window_size 16 --text_sliding_window 512)"
"$PY" - "$OUT/cli_rows.jsonl" <<'PYEOF'
import json, sys
sys.path.insert(0, "bench")
from stream_latency import cli_table
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(cli_table(rows))
for r in rows:
    print(f"- {r['label']}: {r.get('plan')}" + (f" ERROR: {r['error']}" if r.get("error") else ""))
PYEOF
