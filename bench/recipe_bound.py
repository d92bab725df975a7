"""A bench-only row's knob: the bytes per logit the recipe bound counts (`streaming_vlm.training.checkpointing`).

The training bench adds it as one more node of the config's `callbacks:` (no hook in the package), so that two
counts of the recipe's loss memory run side by side in one job:

    python train.py experiment=stage1_2b ... \
        '+callbacks.recipe_bound={_target_: bench.recipe_bound.RecipeBound, bytes_per_logit: 6}'
"""

from __future__ import annotations

from transformers import TrainerCallback

from streaming_vlm.training import checkpointing


class RecipeBound(TrainerCallback):
    def __init__(self, bytes_per_logit: float):
        checkpointing.RECIPE_BYTES_PER_LOGIT = bytes_per_logit  # read by layers_within_recipe on each micro-batch
        print(f"bench: the recipe bound counts {bytes_per_logit:g} bytes per logit", flush=True)
