#!/usr/bin/env bash
# StreamingVLM stage 2 on Qwen3-VL (2B by default; MODEL_SIZE=4b for 4B). See scripts/slurm/sft_launch.sh for the
# environment variables (MODEL_PATH, INIT_FROM, DATA_ROOT, OUTPUT_DIR, NNODES, GPUS_PER_NODE, SLURM=1, DRY_RUN=1).
#   bash scripts/sft_stage_2.sh                                   # torchrun on this node's 8 GPUs
#   MODEL_SIZE=4b NNODES=4 SLURM=1 bash scripts/sft_stage_2.sh    # sbatch, 4 nodes x 8 GPUs
#   DRY_RUN=1 bash scripts/sft_stage_2.sh trainer.save_steps=50   # print and check, run nothing
STAGE=2
source "$(dirname "$0")/slurm/sft_launch.sh" "$@"
