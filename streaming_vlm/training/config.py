"""Checks on a composed training config, done before anything heavy is imported or loaded.

Each problem a user can fix becomes one `UserError` line: a missing data file, a stage-2 `init_from` without a
model, batch arithmetic that DeepSpeed cannot satisfy, an unknown DeepSpeed config, a resume path that is not a
complete checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming_vlm.errors import UserError
from streaming_vlm.training import checkpoints

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Plan:
    """What a run will do, derived from the config and the launch environment."""

    world_size: int
    per_device_batch: int
    grad_accum: int
    global_batch: int
    deepspeed_config: str | None  # absolute path to the json, or None
    zero_stage: int | None
    init_from: str | None  # resolved model directory for stage 2
    model_path: str
    processor_path: str
    output_dir: str
    data_sources: dict[str, dict]  # name -> data config (plain dict)

    def summary(self) -> str:
        ds = f"ZeRO-{self.zero_stage} ({self.deepspeed_config})" if self.deepspeed_config else "no DeepSpeed"
        return (f"world size {self.world_size} | global batch {self.global_batch} = {self.per_device_batch}/device x "
                f"grad-accum {self.grad_accum} x {self.world_size} | {ds} | model {self.model_path} | "
                f"output {self.output_dir}")


def launch_world_size() -> int:
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(var)
        if value and value.isdigit() and (var == "WORLD_SIZE" or os.environ.get("SUBMITIT_EXECUTOR")):
            return int(value)
    return 1


def batch_arithmetic(global_batch: int | None, per_device: int, grad_accum: int | None, world: int,
                     zero_stage: int | None) -> tuple[int, int]:
    """(grad_accum, global_batch) with global = per_device x grad_accum x world exactly, or a UserError."""
    what = f"DeepSpeed ZeRO-{zero_stage}" if zero_stage is not None else "training"
    if per_device is None or int(per_device) < 1:
        raise UserError(f"trainer.per_device_train_batch_size must be >= 1, got {per_device}")
    per_device = int(per_device)
    per_step = per_device * world
    if global_batch is None:
        if grad_accum is None:
            grad_accum = 1
        return int(grad_accum), per_step * int(grad_accum)
    global_batch = int(global_batch)
    if global_batch < 1 or global_batch % per_step:
        raise UserError(
            f"impossible batch arithmetic for {what}: trainer.global_batch_size={global_batch} is not a multiple of "
            f"per_device_train_batch_size ({per_device}) x world size ({world}) = {per_step}")
    derived = global_batch // per_step
    if grad_accum is not None and int(grad_accum) != derived:
        raise UserError(
            f"impossible batch arithmetic for {what}: global_batch_size {global_batch} != per_device "
            f"{per_device} x gradient_accumulation_steps {grad_accum} x world size {world}; drop "
            f"trainer.gradient_accumulation_steps (it is derived: {derived}) or fix the batch sizes")
    return derived, global_batch


def resolve_deepspeed(name: str | None) -> tuple[str | None, int | None]:
    """`deepspeed.config`: a json in configs/deepspeed/ (by file name or stem) or a path -> (abs path, ZeRO stage)."""
    if not name:
        return None, None
    path = Path(str(name))
    if not path.is_file() and not path.is_absolute():
        path = CONFIG_DIR / "deepspeed" / (path.name if path.suffix else f"{path.name}.json")
    if not path.is_file():
        options = sorted(p.stem for p in (CONFIG_DIR / "deepspeed").glob("*.json"))
        raise UserError(f"DeepSpeed config not found: {name} (choose one of {', '.join(options)} or a .json path)")
    try:
        ds = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    stage = ds.get("zero_optimization", {}).get("stage")
    return str(path.resolve()), stage


def data_sources(cfg) -> dict[str, dict]:
    from omegaconf import OmegaConf

    sources = {"data": OmegaConf.to_container(cfg.data, resolve=True)}
    for name, sub in (cfg.get("extra_data") or {}).items():
        sources[f"extra_data.{name}"] = OmegaConf.to_container(sub, resolve=True)
    return sources


def check_data(sources: dict[str, dict]) -> None:
    from streaming_vlm.training.data import resolve_file

    for key, d in sources.items():
        if d.get("generate"):
            continue  # built on first use when missing
        if not d.get("train_file"):
            raise UserError(f"{key}.train_file is not set")
        path = resolve_file(d)
        if path.startswith("hf:"):
            continue
        if not os.path.exists(path):
            hint = f"set {key}.train_file=... or {key}.root=..."
            if d.get("root") and not os.path.isdir(d["root"]):
                hint = f"{key}.root={d['root']} does not exist"
            raise UserError(f"data file not found: {path} ({hint})")


def check_model_path(model_cfg) -> str:
    path = str(model_cfg.name_or_path)
    if model_cfg.get("build_if_missing"):
        return path
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path) or path.count("/") != 1
    if looks_local and not checkpoints.has_model_weights(path):
        if not os.path.isdir(path):
            raise UserError(f"model path not found: {path} (set model.name_or_path=...)")
        raise UserError(f"not a model checkpoint (no config.json + weights): {path}")
    return path


def plan(cfg, world_size: int | None = None) -> Plan:
    """Validate `cfg` (composed Hydra config) and derive the run plan. Raises UserError on bad input."""
    world = world_size or launch_world_size()
    ds_path, stage = resolve_deepspeed((cfg.get("deepspeed") or {}).get("config"))
    t = cfg.trainer
    grad_accum, global_batch = batch_arithmetic(t.get("global_batch_size"), t.per_device_train_batch_size,
                                                t.get("gradient_accumulation_steps"), world, stage)
    init_from = None
    if cfg.get("init_from"):
        resolved = checkpoints.resolve_init_checkpoint(cfg.init_from)
        if resolved is None:
            what = "does not exist" if not os.path.exists(str(cfg.init_from)) else \
                "holds no model (no config.json + model.safetensors, no complete checkpoint-N/)"
            raise UserError(f"init_from {cfg.init_from} {what}: point it at a finished stage-1 output directory")
        init_from = str(resolved)
        model_path = init_from
    else:
        model_path = check_model_path(cfg.model)
    processor_path = str(cfg.model.get("processor") or model_path)
    if init_from and not cfg.model.get("processor") and not (Path(init_from) / "preprocessor_config.json").exists() \
            and not (Path(init_from) / "processor_config.json").exists():
        processor_path = str(cfg.model.name_or_path)
    sources = data_sources(cfg)
    check_data(sources)
    resume = cfg.get("resume", "auto")
    if resume not in (None, "auto", "never", False, True) and not checkpoints.is_complete(str(resume)):
        raise UserError(f"resume={resume} is not a complete checkpoint directory (checkpoint-N with COMPLETE)")
    if cfg.model.lora.enabled and cfg.model.lora.r < 1:
        raise UserError(f"model.lora.r must be >= 1, got {cfg.model.lora.r}")
    return Plan(world_size=world, per_device_batch=int(t.per_device_train_batch_size), grad_accum=grad_accum,
                global_batch=global_batch, deepspeed_config=ds_path, zero_stage=stage, init_from=init_from,
                model_path=model_path, processor_path=processor_path, output_dir=str(cfg.output_dir),
                data_sources=sources)


# TrainingArguments keys in trainer/ that are ours, not HF's.
_OURS = {"global_batch_size", "report_to", "warmup_ratio", "loss_impl", "embedding_learning_rate"}


def training_arguments(cfg, p: Plan, report_to: list[str]) -> Any:
    """Build HF `TrainingArguments` (this initialises torch.distributed and, with ZeRO-3, the DeepSpeed config
    that `from_pretrained` reads to partition weights at load time: so call it BEFORE loading the model)."""
    import dataclasses

    from omegaconf import OmegaConf
    from transformers import TrainingArguments

    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    unknown = sorted(k for k in t if k not in known and k not in _OURS)
    if unknown:
        raise UserError(f"unknown trainer key(s): {', '.join(unknown)} (not HF TrainingArguments fields)")
    kwargs = {k: v for k, v in t.items() if k in known and v is not None}
    if t.get("warmup_ratio") is not None:  # transformers 5 folds the ratio into warmup_steps (a float in [0, 1))
        if "warmup_ratio" in known:
            kwargs["warmup_ratio"] = float(t["warmup_ratio"])
        elif not t.get("warmup_steps"):
            kwargs["warmup_steps"] = float(t["warmup_ratio"])
    kwargs.update(
        output_dir=p.output_dir,
        gradient_accumulation_steps=p.grad_accum,
        deepspeed=p.deepspeed_config,
        seed=int(cfg.seed),
        report_to=report_to,
        run_name=str(cfg.run_name),
        remove_unused_columns=False,
        save_strategy="steps",
        logging_strategy="steps",
        eval_strategy="no",
        label_names=["labels"],
    )
    if p.deepspeed_config and kwargs.get("use_cpu"):
        # accelerate's cpu=True path never enables DeepSpeed; on a CPU-only host the run is on CPU regardless
        # (see cpu_deepspeed.py for the multi-rank gloo launch).
        kwargs["use_cpu"] = False
    if kwargs.get("gradient_checkpointing"):
        kwargs.setdefault("gradient_checkpointing_kwargs", {"use_reentrant": False})
    import torch

    if kwargs.get("use_cpu") or not torch.cuda.is_available():
        kwargs.pop("tf32", None)  # TF32 is a CUDA (Ampere+) setting; TrainingArguments rejects it elsewhere
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"invalid trainer settings: {str(err).splitlines()[0]}") from None
