#!/usr/bin/env bash
# Shared launcher of scripts/sft_stage_{1,2}.sh (sourced, with STAGE set). Builds the train.py command from env:
#   MODEL_SIZE   2b | 4b | tiny               (default 2b; tiny: the smoke_stage experiments, the embedded tiny model)
#   MODEL_PATH   checkpoint / hub id          (stage 1: model.name_or_path)
#   INIT_FROM    stage-1 output dir           (stage 2: init_from; default the stage-1 experiment's outputs/<run_name>)
#   DATA_ROOT    data set directory           (data.root)
#   LIVE_WHISPERX_ROOT                        (stage 1: extra_data.live_whisperx.root)
#   OUTPUT_DIR   run directory                (output_dir)
#   NNODES, GPUS_PER_NODE                     (default 1 x 8; with SLURM=1, GPUS_PER_NODE=0 runs one CPU rank per
#                                             task CPU, see train.sbatch)
#   SLURM=1      submit scripts/slurm/train.sbatch instead of running torchrun here
#   SBATCH_ARGS  extra sbatch options, e.g. "--partition gpu --account proj --cpus-per-task 2"
#   DRY_RUN=1    print the command, then let train.py (dry_run=true) check every argument; nothing runs
# Extra command-line arguments are Hydra overrides for train.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

MODEL_SIZE=${MODEL_SIZE:-2b}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PYTHON=${PYTHON:-python}
case "$MODEL_SIZE" in
  2b|4b) experiment=stage${STAGE}_${MODEL_SIZE} ;;
  tiny) experiment=smoke_stage${STAGE} ;;
  *) echo "error: MODEL_SIZE must be 2b, 4b or tiny, got '$MODEL_SIZE'" >&2; exit 2 ;;
esac

args=("experiment=$experiment")
[ -n "${MODEL_PATH:-}" ] && args+=("model.name_or_path=$MODEL_PATH")
if [ "$STAGE" = 2 ]; then args+=("init_from=${INIT_FROM:-outputs/${experiment/stage2/stage1}}"); fi
[ -n "${DATA_ROOT:-}" ] && args+=("data.root=$DATA_ROOT")
if [ "$STAGE" = 1 ] && [ -n "${LIVE_WHISPERX_ROOT:-}" ]; then args+=("extra_data.live_whisperx.root=$LIVE_WHISPERX_ROOT"); fi
[ -n "${OUTPUT_DIR:-}" ] && args+=("output_dir=$OUTPUT_DIR")
args+=("$@")

if [ "${SLURM:-0}" = 1 ]; then
  read -r -a sbatch_args <<< "${SBATCH_ARGS:-}"
  cmd=(sbatch --nodes "$NNODES" --gpus-per-node "$GPUS_PER_NODE" --job-name "sft-stage${STAGE}-${MODEL_SIZE}"
       "${sbatch_args[@]}" scripts/slurm/train.sbatch "${args[@]}")
elif [ "$NNODES" != 1 ]; then
  echo "error: NNODES=$NNODES needs SLURM=1 (or run torchrun with --rdzv-endpoint on every node yourself)" >&2; exit 2
else
  cmd=(torchrun --nproc_per_node "$GPUS_PER_NODE" train.py "${args[@]}")
fi

if [ "${DRY_RUN:-0}" = 1 ]; then
  printf 'command:'; printf ' %q' "${cmd[@]}"; printf '\n'
  WORLD_SIZE=$((NNODES * (GPUS_PER_NODE > 0 ? GPUS_PER_NODE : 1))) "$PYTHON" train.py "${args[@]}" dry_run=true
  exit $?
fi
mkdir -p logs
exec "${cmd[@]}"
