"""One training run from a composed Hydra config: checks -> TrainingArguments (DeepSpeed config first) -> model
(partitioned at load under ZeRO-3) -> data -> HF Trainer with auto-resume -> final model + loss curve."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from streaming_vlm.errors import UserError
from streaming_vlm.training import checkpoints
from streaming_vlm.training.config import plan as make_plan
from streaming_vlm.training.config import training_arguments
from streaming_vlm.training.launch import export_submitit_distributed_env

log = logging.getLogger(__name__)


def resume_checkpoint(resume, output_dir: str) -> str | None:
    if resume in (None, False, "never"):
        return None
    if resume in (True, "auto"):
        found = checkpoints.newest_checkpoint(output_dir)
        return str(found) if found else None
    return str(resume)  # an explicit checkpoint, checked complete by plan()


def dry_run_report(cfg, p) -> str:
    from omegaconf import OmegaConf

    lines = ["dry run: nothing is trained",
             f"command: {' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}",
             f"plan: {p.summary()}",
             f"env: WORLD_SIZE={os.environ.get('WORLD_SIZE', '-')} RANK={os.environ.get('RANK', '-')} "
             f"LOCAL_RANK={os.environ.get('LOCAL_RANK', '-')} MASTER_ADDR={os.environ.get('MASTER_ADDR', '-')} "
             f"MASTER_PORT={os.environ.get('MASTER_PORT', '-')}",
             f"resume: {resume_checkpoint(cfg.get('resume'), p.output_dir) or 'fresh start'}",
             "config:", OmegaConf.to_yaml(cfg, resolve=True)]
    return "\n".join(lines)


def finished_message(cfg, output_dir: str) -> str | None:
    """resume=auto over a run whose final model is saved and marked complete (for this step budget): the one line
    saying so, else None. Re-running a finished command must not train past it and change the final model."""
    if cfg.get("resume", "auto") not in ("auto", True):
        return None
    try:
        step = int(json.loads((Path(output_dir) / checkpoints.TRAINING_COMPLETE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    max_steps = int(cfg.trainer.max_steps)
    if 0 < max_steps and step < max_steps:
        return None  # a larger step budget than the finished run's: train on from its newest checkpoint
    return (f"training already complete in {output_dir} (final model at step {step}); nothing to do. To train "
            f"again, use a new output_dir, or a larger trainer.max_steps to continue")


def final_step_checkpoint(resume: str | None, max_steps: int) -> str | None:
    """The resume checkpoint when it already reached the run's last step (a run killed during its final save)."""
    if not resume:
        return None
    try:
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    target = max_steps if max_steps > 0 else int(state.get("max_steps") or 0)
    return resume if target > 0 and int(state.get("global_step", 0)) >= target else None


def check_resume_compatible(resume: str | None, p) -> None:
    """HF resumes a DeepSpeed run from the DeepSpeed state of a checkpoint and a plain run from its optimizer.pt:
    a checkpoint written the other way cannot continue this run (HF would fail deep inside, or silently start the
    optimizer afresh). One line saying what to pass instead."""
    if not resume:
        return
    ckpt = Path(resume)
    has_ds = (ckpt / "latest").is_file() or any(ckpt.glob("global_step*"))
    if p.deepspeed_config and not has_ds:
        raise UserError(
            f"cannot resume this DeepSpeed ZeRO-{p.zero_stage} run from {ckpt}: it was written without DeepSpeed (no "
            f"DeepSpeed state in it). Pass deepspeed=none to continue it as it was trained, or start a ZeRO run from "
            f"its weights with init_from={ckpt} and a new output_dir (or resume=never)")
    if not p.deepspeed_config and has_ds:
        raise UserError(
            f"cannot resume this run without DeepSpeed from {ckpt}: it was written by a DeepSpeed run (its optimizer "
            f"state is DeepSpeed's). Pass the same deepspeed=... as that run (e.g. deepspeed=zero3), or start from its "
            f"weights with init_from={ckpt} and a new output_dir")


MODEL_FILES_EXCLUDED = {"optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin",
                        "trainer_state.json", "latest", "zero_to_fp32.py", checkpoints.COMPLETE, checkpoints.STATE_FILE}


def finish_final_save(checkpoint: str, processor_path: str, output_dir: str, step: int) -> None:
    """The final model from a checkpoint at the last step, published like save_final's (main process only)."""
    from streaming_vlm.model.loading import load_processor

    staged = Path(output_dir) / checkpoints.STAGING / "final"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for src in Path(checkpoint).iterdir():
        if src.is_file() and src.name not in MODEL_FILES_EXCLUDED and not src.name.startswith("rng_state"):
            shutil.copy2(src, staged / src.name)
    if not checkpoints.has_model_weights(staged) and not (staged / "adapter_model.safetensors").is_file():
        shutil.rmtree(staged)
        raise UserError(f"{checkpoint} reached the last step but holds no model weights to publish; rerun with "
                        "resume=never and a new output_dir")
    save_processor(load_processor(processor_path), staged)
    publish_final(staged, output_dir, step)


def save_processor(processor, staged: Path) -> None:
    processor.save_pretrained(staged)
    # transformers 5.17 (the GPU machine's) looks for the per-processor files, as on the hub
    for part in ("image_processor", "video_processor"):
        if hasattr(processor, part):
            getattr(processor, part).save_pretrained(staged)


def publish_final(staged: Path, output_dir: str, step: int) -> None:
    """Move a staged final model into `output_dir` (config last: a half-moved folder does not load), then mark the
    run complete. A kill before the marker leaves the last checkpoint, from which a re-run finishes this."""
    out = Path(output_dir)
    names = sorted(p.name for p in staged.iterdir())
    last = [n for n in ("config.json", "adapter_config.json") if n in names]
    for name in [n for n in names if n not in last] + last:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staged / name, target)
    checkpoints.write_json_atomic(out / checkpoints.TRAINING_COMPLETE, {"step": step})
    shutil.rmtree(staged, ignore_errors=True)
    try:
        staged.parent.rmdir()  # .staging/, when nothing else is in it
    except OSError:
        pass


def save_final(trainer, processor, output_dir: str, lora_cfg) -> None:
    """The final model in `output_dir`, loadable by from_pretrained / AutoProcessor / peft. Collective under ZeRO-3."""
    staged = Path(output_dir) / checkpoints.STAGING / "final"
    if trainer.is_world_process_zero() and staged.exists():
        shutil.rmtree(staged)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staged))  # ZeRO-3: gathers the 16-bit weights (stage3_gather_16bit_weights_on_model_save)
    merged_src = None
    if lora_cfg.enabled and lora_cfg.get("merge_on_save"):
        if trainer.is_deepspeed_enabled:
            log.warning("model.lora.merge_on_save is skipped under DeepSpeed (weights are partitioned); merge offline")
        elif trainer.is_world_process_zero():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged_src = staged / "merged"
            merged.save_pretrained(merged_src, safe_serialization=True)
            processor.save_pretrained(merged_src)
    if trainer.is_world_process_zero():
        save_processor(processor, staged)
        publish_final(staged, output_dir, trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()


def run(cfg) -> dict | None:
    export_submitit_distributed_env()
    p = make_plan(cfg)
    if cfg.get("dry_run"):
        print(dry_run_report(cfg, p), flush=True)
        return None
    rank = int(os.environ.get("RANK", "0"))
    done = finished_message(cfg, p.output_dir)
    if done:
        if rank == 0:
            print(done, flush=True)
        return None
    resume = resume_checkpoint(cfg.get("resume"), p.output_dir)
    check_resume_compatible(resume, p)
    last = final_step_checkpoint(resume, int(cfg.trainer.max_steps))
    if last:
        # killed during the final save: the last checkpoint holds the final weights; publish them, train nothing
        if rank == 0:
            step = checkpoints.checkpoint_step(last)
            checkpoints.clear_staging(p.output_dir)
            finish_final_save(last, p.processor_path, p.output_dir, step)
            print(f"{last} is the run's last step: finished its final save into {p.output_dir}; nothing trained",
                  flush=True)
        return None

    import torch
    import transformers

    from streaming_vlm.training import tracking
    from streaming_vlm.training.callbacks import HeldoutLoss, StepRecorder, instantiate_callbacks
    from streaming_vlm.training.curve import write_curve
    from streaming_vlm.training.data import build_heldout_mix, build_train, ensure_generated, set_expected_total
    from streaming_vlm.training.model import ensure_tiny_checkpoint, load_for_training, parameter_report
    from streaming_vlm.training.trainer import StreamingTrainer

    os.makedirs(p.output_dir, exist_ok=True)
    report_to, wandb_mode = tracking.setup(cfg.wandb, cfg.trainer.get("report_to"), p.output_dir, str(cfg.run_name),
                                           is_main=rank == 0)
    # TrainingArguments FIRST: it sets up torch.distributed and (ZeRO-3) the global DeepSpeed config that makes
    # from_pretrained partition the weights as they load.
    if p.deepspeed_config:
        from streaming_vlm.training import cpu_deepspeed

        cpu_deepspeed.enable()  # no-op with CUDA: lets CI run real multi-rank ZeRO-3 over gloo on CPU
    args = training_arguments(cfg, p, report_to)
    cuda = torch.cuda.is_available() and not args.use_cpu
    if not cuda:
        from streaming_vlm.training.host_memory import keep_freed_memory

        # Large freed blocks (the 151k-row head's gradients) are reused instead of page-faulted in afresh.
        if keep_freed_memory():
            log.info("host allocator: freed blocks up to 1 GiB kept for reuse (CPU training)")
    transformers.set_seed(int(cfg.seed))
    with args.main_process_first(local=False, desc="prepare"):
        if args.process_index == 0:
            checkpoints.clear_staging(p.output_dir)  # half-written checkpoints of a killed run
        for d in p.data_sources.values():
            ensure_generated(d)
        if not p.init_from and cfg.model.get("build_if_missing"):
            ensure_tiny_checkpoint(p.model_path, str(cfg.model.build_if_missing), int(cfg.model.get("build_seed", 0)))

    model, processor = load_for_training(cfg.model, p, deepspeed_enabled=bool(p.deepspeed_config))
    from streaming_vlm.training.checkpointing import CheckpointPolicy
    from streaming_vlm.training.compiled_layers import setup_compile
    from streaming_vlm.training.kernels import setup_kernels

    # compiled layers take transformers' modules, so the compile decision comes first and the kernels follow it
    compiled = setup_compile(model, cfg.model.get("compile_layers"), cuda=cuda, zero_stage=p.zero_stage,
                             kernels=cfg.model.get("kernels"), vision_choice=cfg.model.get("compile_vision"),
                             announce=args.process_index == 0)
    setup_kernels(model, cfg.model.get("kernels"), cuda=cuda, compiled=compiled, announce=args.process_index == 0)
    policy = CheckpointPolicy(cfg.trainer.get("gradient_checkpointing", False),
                              float(cfg.trainer.get("memory_fraction") or 0.85),
                              budget=str(cfg.trainer.get("memory_budget") or "recipe"),
                              save_attention=cfg.trainer.get("save_attention", True) is not False)
    report = parameter_report(model)
    if report["trainable_vision"]:
        raise RuntimeError(f"vision parameters left trainable: {report['trainable_vision'][:3]}")
    dataset, collator, tracker = build_train(p.data_sources, processor, cuda=cuda, announce=args.process_index == 0)
    set_expected_total(tracker, dataset, float(cfg.trainer.num_train_epochs), int(cfg.trainer.max_steps),
                       p.per_device_batch * p.grad_accum, p.world_size)
    if args.process_index == 0:
        partitioned = any(hasattr(prm, "ds_id") for prm in model.parameters())
        print(f"{p.summary()}\ntrainable params {report['trainable']:,} | frozen {report['frozen']:,} "
              f"(vision tower) | {len(dataset)} training samples | wandb {wandb_mode}"
              + (" | weights partitioned at load (ZeRO-3)" if partitioned else ""), flush=True)

    attempt = f"{os.getpid()}-{int(__import__('time').time())}"
    trainer = StreamingTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                               processing_class=processor, bad_sample_tracker=tracker, attempt=attempt,
                               loss_impl=str(cfg.trainer.get("loss_impl") or "selective"), checkpoint_policy=policy,
                               embedding_lr=cfg.trainer.get("embedding_learning_rate"))
    trainer.add_callback(StepRecorder(trainer))
    if cfg.eval.get("enabled") and cfg.eval.heldout.get("enabled"):
        heldout = build_heldout_mix(p.data_sources, processor, cuda=cuda)
        if heldout is not None:
            trainer.add_callback(HeldoutLoss(trainer, heldout, collator, int(cfg.eval.heldout.max_samples),
                                             int(cfg.eval.heldout.get("every_steps", 0))))
    for cb in instantiate_callbacks(cfg.get("callbacks"), trainer, processor):
        trainer.add_callback(cb)
    if resume:
        trainer.restore_extra_state(resume)
        if args.process_index == 0:
            print(f"resuming from {resume}", flush=True)
    result = trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, processor, p.output_dir, cfg.model.lora)
    summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
               "bad_samples": trainer.bad_samples_total, "resumed_from": resume}
    if trainer.is_world_process_zero():
        curve, table = write_curve(p.output_dir)
        summary["final_loss"] = curve[-1]["loss"] if curve else None
        checkpoints.write_json_atomic(Path(p.output_dir) / "train_summary.json", summary)
        print(f"\nloss curve ({p.output_dir}/loss_curve.json):\n{table}\nfinal model: {p.output_dir}", flush=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def main_task(cfg) -> dict | None:
    """Hydra task body: a UserError is one line on stderr and exit code 2 (no traceback), on every rank."""
    try:
        return run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


__all__ = ["run", "main_task", "save_final", "resume_checkpoint", "json"]
