"""Checks on a composed training config, done before anything heavy is imported or loaded.

Each problem a user can fix becomes one `UserError` line: a missing data file, a stage-2 `init_from` without a
model, batch arithmetic that DeepSpeed cannot satisfy, an unknown DeepSpeed config, a resume path that is not a
complete checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming_vlm.errors import UserError
from streaming_vlm.model.weights import check_weights
from streaming_vlm.model.hub import looks_like_hub_id, resolve_hub_id
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
    deepspeed_auto: bool = False  # chosen by world size (`deepspeed: auto`)
    loader_workers: int = 0  # DataLoader worker processes per training process
    loader_workers_auto: str | None = None  # how `auto` chose them

    def summary(self) -> str:
        ds = f"ZeRO-{self.zero_stage} ({self.deepspeed_config})" if self.deepspeed_config else "no DeepSpeed"
        if self.deepspeed_auto:
            ds += f" (deepspeed auto: {self.world_size} process{'es' if self.world_size > 1 else ''})"
        return (f"world size {self.world_size} | global batch {self.global_batch} = {self.per_device_batch}/device x "
                f"grad-accum {self.grad_accum} x {self.world_size} | {ds} | loader workers {self.loader_workers}"
                f"{f' (auto: {self.loader_workers_auto})' if self.loader_workers_auto else ''} | "
                f"model {self.model_path} | output {self.output_dir}")


def launch_world_size() -> int:
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(var)
        if value and value.isdigit() and (var == "WORLD_SIZE" or os.environ.get("SUBMITIT_EXECUTOR")):
            return int(value)
    return 1


def loader_workers(value) -> tuple[int, str | None]:
    """(DataLoader workers, how `auto` chose them or None) for a `num_workers` value. `auto`: the CPUs this process
    may run on, shared by the training processes of this node, less one for the training process itself. Decoding
    and the video processor run in the workers, one CPU each, and a window costs seconds of CPU: every spare CPU is
    a worker."""
    if value != "auto":
        return int(value or 0), None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = next((int(v) for v in (os.environ.get("LOCAL_WORLD_SIZE"), os.environ.get("SLURM_NTASKS_PER_NODE"))
                  if v and v.isdigit() and int(v) > 0), 1)
    workers = max(0, cpus // local - 1)
    return workers, f"{cpus} CPUs / {local} process{'es' if local > 1 else ''} on this node - 1"


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


# `deepspeed.config: auto` (configs/deepspeed/auto.yaml), by world size: one process has nothing to partition, so
# ZeRO's per-layer gather/release, bucketing and fp32 master copies are pure overhead there -> plain torch (fused
# AdamW over fp32 weights, bf16 autocast); several processes -> ZeRO-3, the recipe's memory layout. A named config
# (`deepspeed=zero3`, `deepspeed=zero2`, a .json path) or `deepspeed=none` is used as given, whatever the world size.
AUTO_SINGLE_PROCESS = None
AUTO_MULTI_PROCESS = "zero3.json"


def auto_deepspeed(world: int) -> str | None:
    return AUTO_SINGLE_PROCESS if world <= 1 else AUTO_MULTI_PROCESS


def resolve_deepspeed(name: str | None, world: int = 1) -> tuple[str | None, int | None]:
    """`deepspeed.config`: a json in configs/deepspeed/ (by file name or stem), a path, or `auto` (by world size)
    -> (abs path, ZeRO stage)."""
    if str(name) == "auto":
        name = auto_deepspeed(world)
    if not name:
        return None, None
    path = Path(str(name))
    if not path.is_file() and not path.is_absolute():
        path = CONFIG_DIR / "deepspeed" / (path.name if path.suffix else f"{path.name}.json")
    if not path.is_file():
        options = sorted(p.stem for p in (CONFIG_DIR / "deepspeed").glob("*.json"))
        raise UserError(f"DeepSpeed config not found: {name} (choose auto, one of {', '.join(options)} or a .json "
                        "path)")
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
    from streaming_vlm.training.data import repeat_count, resolve_file

    for key, d in sources.items():
        repeat_count(d, key)
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


def check_buildable(path: str) -> None:
    """A checkpoint may be built at `path` only if nothing is there, or a checkpoint our factory built (its marker
    file says so). Any other folder is the user's: it is never replaced or deleted."""
    from streaming_vlm.model.tiny import is_factory_checkpoint  # light: no torch

    if os.path.exists(path) and not checkpoints.has_model_weights(path) and not is_factory_checkpoint(path):
        raise UserError(f"model.name_or_path={path} exists but holds no model (no config.json + weights) and was not "
                        "built by this project, so it is left alone; point it at a model or at a new folder")


def check_model_path(model_cfg) -> str:
    path = str(model_cfg.name_or_path)
    if model_cfg.get("build_if_missing"):
        if checkpoints.has_model_weights(path):
            check_weights(path)
        else:
            check_buildable(path)
        return path
    if not looks_like_hub_id(path) and not checkpoints.has_model_weights(path):
        if not os.path.isdir(path):
            raise UserError(f"model path not found: {path} (set model.name_or_path=...)")
        raise UserError(f"not a model checkpoint (no config.json + weights): {path}")
    check_weights(path)
    return path


# (key, kind, low, high, nullable): every number a run reads, checked before anything loads. kind: "int", "number"
# (int or float, finite), "bool". low/high are inclusive bounds (None: unbounded).
_TRAINER_VALUES = [
    ("max_steps", "int", -1, None, False), ("num_train_epochs", "number", 0, None, False),
    ("learning_rate", "number", 0, None, False), ("warmup_ratio", "number", 0, 1, True),
    ("warmup_steps", "number", 0, None, True), ("weight_decay", "number", 0, None, False),
    ("adam_beta1", "number", 0, 1, True), ("adam_beta2", "number", 0, 1, True),
    ("adam_epsilon", "number", 0, None, True), ("max_grad_norm", "number", 0, None, True),
    ("per_device_train_batch_size", "int", 1, None, False), ("global_batch_size", "int", 1, None, True),
    ("gradient_accumulation_steps", "int", 1, None, True), ("logging_steps", "int", 1, None, True),
    ("save_steps", "int", 1, None, True), ("save_total_limit", "int", 0, None, True),
    ("dataloader_num_workers", "int_or_auto", 0, None, True), ("data_seed", "int", 0, None, True),
    ("ddp_timeout", "int", 1, None, True), ("bf16", "bool", None, None, True), ("fp16", "bool", None, None, True),
    ("tf32", "bool", None, None, True), ("gradient_checkpointing", "bool_or_auto", None, None, True),
    ("memory_fraction", "number", 0.05, 1, True), ("embedding_learning_rate", "number", 0, None, True),
    ("use_cpu", "bool", None, None, True), ("save_attention", "bool", None, None, True),
]
_DATA_VALUES = [
    ("window", "number", 1, None, False), ("stride", "number", 1, None, False),
    ("min_words", "int", 0, None, True), ("text_sink", "int", 0, None, False),
    ("text_sliding_window", "int", 0, None, False), ("fps", "number", 0.001, 120, False),
    ("min_pixels", "int", 1, None, True), ("max_pixels", "int", 1, None, True), ("total_pixels", "int", 1, None, True),
    ("max_bad_fraction", "number", 0, 1, False), ("num_workers", "int_or_auto", 0, None, True),
    ("packing", "bool", None, None, True), ("max_packed_tokens", "int", 1, None, True),
]
_TOP_VALUES = [("seed", "int", 0, None, False), ("model.build_seed", "int", 0, None, True),
               ("model.freeze_vision", "bool", None, None, True), ("model.lora.enabled", "bool", None, None, True),
               ("model.lora.r", "int", 1, None, True), ("model.lora.alpha", "number", 0, None, True),
               ("model.lora.dropout", "number", 0, 1, True)]


def check_value(key: str, value, kind: str, low, high, nullable: bool) -> None:
    """One config value against its kind and bounds; a UserError naming the key otherwise."""
    import math

    if value is None:
        if nullable:
            return
        raise UserError(f"{key} must be set (got null)")
    if kind.endswith("_or_auto") and value == "auto":  # chosen at run time (checkpointing.py, loader_workers)
        return
    or_auto = " or auto" if kind == "int_or_auto" else ""
    if or_auto:
        kind = "int"
    if kind in ("bool", "bool_or_auto"):
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true{',' if kind == 'bool_or_auto' else ' or'} false"
                            f"{' or auto' if kind == 'bool_or_auto' else ''}, got {value!r}")
        return
    wanted = int if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise UserError(f"{key} must be {'an integer' if kind == 'int' else 'a number'}{or_auto}, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value!r}")
    if low is not None and value < low or high is not None and value > high:
        bounds = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]" if low is not None else f"<= {high:g}"
        raise UserError(f"{key} must be {bounds}, got {value!r}")


def check_values(cfg) -> None:
    """Types and ranges of every config value a run reads (trainer, each data source, seed, model), before any model
    or data loads: `trainer.max_steps=abc`, `data.fps=nan` or `data.text_sliding_window=-5` are one line here."""
    from omegaconf import OmegaConf

    def get(path: str):
        return OmegaConf.select(cfg, path, default=None)

    for key, *rule in _TRAINER_VALUES:
        check_value(f"trainer.{key}", get(f"trainer.{key}"), *rule)
    for name, d in data_sources(cfg).items():
        for key, *rule in _DATA_VALUES:
            if key in d:
                check_value(f"{name}.{key}", d[key], *rule)
    for key, *rule in _TOP_VALUES:
        check_value(key, get(key), *rule)
    from streaming_vlm.model.vision_attention import VISION_ATTENTION

    if str(get("model.vision_attention") or "segments").lower() not in VISION_ATTENTION:
        raise UserError(f"model.vision_attention must be one of {', '.join(VISION_ATTENTION)}, "
                        f"got {get('model.vision_attention')!r}")


def check_output_dir(output_dir: str) -> None:
    """The run's output folder is, or can be made as, a writable folder; checked without leaving anything behind (a
    dry run writes nothing)."""
    if not output_dir or output_dir == "None":
        raise UserError("output_dir is not set")
    path = Path(output_dir).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output_dir {output_dir} is not writable: {existing} is a file, not a folder")
    try:  # a real probe (permission bits say nothing for root or on read-only mounts); removed on close
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise UserError(f"output_dir {output_dir} is not writable: {existing}: {err.strerror or err}") from None


def check_output_dir_override(argv: list[str]) -> None:
    """`output_dir=...` on the command line is checked before Hydra, which makes it its run folder first thing (an
    unwritable one would end in Hydra's traceback). Values with interpolations are checked later, in plan()."""
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("output_dir=")]
    if values and "${" not in values[-1]:
        check_output_dir(values[-1])


def plan(cfg, world_size: int | None = None) -> Plan:
    """Validate `cfg` (composed Hydra config) and derive the run plan. Raises UserError on bad input."""
    check_values(cfg)
    world = world_size or launch_world_size()
    ds_path, stage = resolve_deepspeed((cfg.get("deepspeed") or {}).get("config"), world)
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
    if not cfg.get("dry_run"):
        check_output_dir(str(cfg.output_dir))
    if looks_like_hub_id(model_path) and not cfg.get("dry_run"):
        # no network and not cached: one clear line now, not minutes of retries inside from_pretrained
        model_path = resolve_hub_id(model_path)
    workers, workers_auto = loader_workers(t.get("dataloader_num_workers"))
    return Plan(world_size=world, per_device_batch=int(t.per_device_train_batch_size), grad_accum=grad_accum,
                global_batch=global_batch, deepspeed_config=ds_path, zero_stage=stage, init_from=init_from,
                model_path=model_path, processor_path=processor_path, output_dir=str(cfg.output_dir),
                data_sources=sources,
                deepspeed_auto=str((cfg.get("deepspeed") or {}).get("config")) == "auto",
                loader_workers=workers, loader_workers_auto=workers_auto)


# TrainingArguments keys in trainer/ that are ours, not HF's.
_OURS = {"global_batch_size", "report_to", "warmup_ratio", "loss_impl", "memory_fraction", "memory_budget",
         "embedding_learning_rate", "save_attention"}


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
        dataloader_num_workers=p.loader_workers,
    )
    if p.deepspeed_config and kwargs.get("use_cpu"):
        # accelerate's cpu=True path never enables DeepSpeed; on a CPU-only host the run is on CPU regardless
        # (see cpu_deepspeed.py for the multi-rank gloo launch).
        kwargs["use_cpu"] = False
    from streaming_vlm.training.checkpointing import BUDGETS, parse_mode

    if str(t.get("memory_budget") or "recipe").lower() not in BUDGETS:
        raise UserError(f"trainer.memory_budget must be one of {', '.join(BUDGETS)}, got {t.get('memory_budget')!r}")

    # transformers >= 5.23 names it activation_checkpointing (the old name still works, with a FutureWarning);
    # either way `args.gradient_checkpointing` reads the value
    name = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    kwargs.pop("gradient_checkpointing", None)
    try:  # true | false | auto: the Trainer sets checkpointing up unless false; CheckpointPolicy picks the layers
        kwargs[name] = parse_mode(t.get("gradient_checkpointing", False)) != "false"
    except ValueError as err:
        raise UserError(str(err)) from None
    if kwargs.get(name):
        from streaming_vlm.training.checkpointing import DEFAULT_CHECKPOINT_KWARGS

        # `auto` recomputes layers keeping their attention's outputs over these default kwargs only (kwargs of the
        # user's own are used as given; `trainer.save_attention` is read by the CheckpointPolicy)
        kwargs.setdefault(f"{name}_kwargs", dict(DEFAULT_CHECKPOINT_KWARGS))
    import torch

    if torch.cuda.is_available() and kwargs.get("dataloader_pin_memory", True):
        # batches arrive in pinned memory: copy them to the GPU without stalling the host
        kwargs.setdefault("accelerator_config", {"non_blocking": True})

    if kwargs.get("use_cpu") or not torch.cuda.is_available():
        kwargs.pop("tf32", None)  # TF32 is a CUDA (Ampere+) setting; TrainingArguments rejects it elsewhere
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"invalid trainer settings: {str(err).splitlines()[0]}") from None
