"""The model as training wants it: loaded (partitioned at load under ZeRO-3), vision tower frozen, optional LoRA."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from streaming_vlm.errors import UserError
from streaming_vlm.model.vision_attention import use_segment_attention
from streaming_vlm.training import checkpoints

VISION_PREFIXES = ("visual.", "model.visual.")


def ensure_tiny_checkpoint(path: str, size: str, seed: int = 0, timeout_s: float = 600.0) -> None:
    """Build the local checkpoint when missing: one process per node builds into a temp dir and renames it."""
    if checkpoints.has_model_weights(path):
        return
    from streaming_vlm.model.tiny import build_checkpoint
    from streaming_vlm.training.config import check_buildable

    check_buildable(path)

    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        tmp = Path(f"{path}.tmp{os.getpid()}")
        build_checkpoint(tmp, size=size, seed=seed)
        if checkpoints.has_model_weights(path):  # someone else (another job) won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            if os.path.isdir(path):
                check_buildable(path)  # only a checkpoint our factory built is ever replaced
                shutil.rmtree(path)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            os.rename(tmp, path)
        return
    deadline = time.time() + timeout_s
    while not checkpoints.has_model_weights(path):
        if time.time() > deadline:
            raise UserError(f"timed out waiting for local rank 0 to build {path}")
        time.sleep(0.5)


def freeze_vision(model) -> int:
    """Freeze the whole vision tower: patch embed, blocks, merger AND `deepstack_merger_list`. Returns #params.

    The tower then runs under no_grad: autograd records nothing for it and keeps none of its activations (its
    outputs, the merged and DeepStack features, enter the language model as constants), and it runs once per
    forward, never inside the language model's recomputation. Its blocks are not checkpointed
    (`checkpointing.CheckpointPolicy` clears their flags)."""
    visual = model.model.visual
    visual.requires_grad_(False)
    if not getattr(visual, "_runs_without_grad", False):
        visual.forward = torch.no_grad()(visual.forward)
        visual._runs_without_grad = True
    return sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in visual.parameters())


def parameter_report(model) -> dict:
    def numel(p):
        return p.ds_numel if hasattr(p, "ds_numel") else p.numel()

    trainable = frozen = 0
    seen = set()
    frozen_outside_vision, trainable_vision = [], []
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        is_vision = ".visual." in f".{name}"
        if p.requires_grad:
            trainable += numel(p)
            if is_vision:
                trainable_vision.append(name)
        else:
            frozen += numel(p)
            if not is_vision and "lora_" not in name:
                frozen_outside_vision.append(name)
    return {"trainable": trainable, "frozen": frozen, "trainable_vision": trainable_vision,
            "frozen_outside_vision": frozen_outside_vision}


def lora_target_regex(targets) -> str:
    """LoRA on the language model's projections only (the vision tower is frozen and its layers are not wrapped)."""
    names = "|".join(sorted(set(targets)))
    return rf".*language_model\..*\.({names})$"


def apply_lora(model, lora_cfg):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(lora_cfg.r), lora_alpha=int(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                        target_modules=lora_target_regex(lora_cfg.target_modules), bias="none")
    with warnings.catch_warnings():
        # peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a FutureWarning that
        # names neither our code nor anything a user can change; only that message is silenced.
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)


def load_for_training(model_cfg, plan, deepspeed_enabled: bool):
    """(model, processor). Call after TrainingArguments(deepspeed=...) exists so ZeRO-3 partitions at load."""
    from transformers import Qwen3VLForConditionalGeneration

    from streaming_vlm.model.loading import check_attn_implementation, check_weights, load_processor, resolve_dtype

    if not plan.init_from and model_cfg.get("build_if_missing"):
        ensure_tiny_checkpoint(plan.model_path, str(model_cfg.build_if_missing), int(model_cfg.get("build_seed", 0)))
    attn = check_attn_implementation(str(model_cfg.attn_implementation))
    check_weights(plan.model_path)
    # Under DeepSpeed the weights live in the training dtype (DeepSpeed keeps fp32 masters in the optimizer);
    # without it, mixed precision is autocast over fp32 weights.
    dtype = resolve_dtype(model_cfg.dtype) if deepspeed_enabled else torch.float32
    try:
        model = Qwen3VLForConditionalGeneration.from_pretrained(plan.model_path, dtype=dtype, attn_implementation=attn,
                                                                use_safetensors=True)
    except OSError as err:
        raise UserError(f"cannot load model from {plan.model_path}: {str(err).splitlines()[0]}") from None
    # No KV cache in training: the text config has its own `use_cache`, which the language model reads (a cache
    # built per forward holds every layer's keys and values, and its update is a guard for compiled layers).
    model.config.use_cache = False
    if getattr(model.config, "text_config", None) is not None:
        model.config.text_config.use_cache = False
    # model.vision_attention (checked with the config, `config.check_values`): segments, a window's frames in one
    # SDPA call per block; transformers, one call per frame. setup_compile's `compile:` line names what the tower runs.
    if str(model_cfg.get("vision_attention") or "segments").lower() == "segments":
        use_segment_attention(model)
    if model_cfg.freeze_vision:
        freeze_vision(model)
    if model_cfg.lora.enabled:
        model = apply_lora(model, model_cfg.lora)
    processor = load_processor(plan.processor_path)
    return model, processor
