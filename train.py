#!/usr/bin/env python
"""Streaming SFT of Qwen3-VL (StreamingVLM recipe) with Hydra + HF Trainer + DeepSpeed.

    python train.py +experiment=stage1_2b                      # or experiment=stage1_2b
    python train.py experiment=smoke_stage1 trainer.max_steps=10 output_dir=/tmp/run
    torchrun --nproc_per_node 8 train.py experiment=stage1_2b
    deepspeed --num_gpus 8 train.py experiment=stage1_2b       # --local_rank=N is accepted
    python train.py -m hydra/launcher=slurm experiment=stage1_2b hydra.launcher.nodes=4
    python train.py experiment=stage2_2b init_from=outputs/stage1_2b dry_run=true

Every key of configs/ can be overridden on the command line. Bad input (unknown experiment, missing data file,
stage-2 init path without a model, impossible batch arithmetic) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Windows differ in length from step to step: growable segments keep the CUDA allocator from fragmenting
    # (which `gradient_checkpointing: auto` relies on when it fills memory). Set before torch touches CUDA.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from streaming_vlm.errors import UserError
    from streaming_vlm.training.config import check_output_dir_override
    from streaming_vlm.training.launch import prepare_argv

    try:
        sys.argv = [sys.argv[0]] + prepare_argv(sys.argv[1:], CONFIG_DIR)
        check_output_dir_override(sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    import hydra

    @hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
    def task(cfg):
        from streaming_vlm.training.run import main_task

        return main_task(cfg)

    task()
    # The process ends here: release the process group the trainer set up (NCCL warns at exit about one left open).
    dist = sys.modules.get("torch.distributed")  # not imported by a dry run
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
