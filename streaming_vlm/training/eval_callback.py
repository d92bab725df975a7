"""`WinRateCallback`: Inf-Streams-Eval win rate during training, through the real streaming engine.

Every `every_n_steps` optimizer steps (0 = never) and at the end of training, the callback streams the first
`minutes` minutes of up to `max_streams` held-out games (`reference`, Inf-Stream-Eval rows
`{video, title, content: [[s, e, text]], preasr}`; videos under `video_root`) through
`streaming_vlm.inference.run_stream`: the engine, stream template, bounded cache and contiguous positions the CLI
uses, with the `inference` overrides of the config (greedy by default, temperature 0). The per-second outputs are
judged against a baseline with `streaming_vlm.eval.win_rate_from_outputs` (each segment twice, A/B swapped) and
`eval/win_rate` (percent) plus its vote counts (`eval/votes`, `eval/model_votes`, `eval/baseline_votes`,
`eval/ties`, `eval/invalid`, `eval/missing`) go to `trainer.log`, i.e. `state.log_history`, the console and wandb.

The reference is cut to what was streamed: only reference items ending within the first `minutes` minutes count, so
segments after the streamed part are not judged (they would all be "missing"). `segment_seconds` / `min_words`
apply as in the CLI (synthetic games are short: 30 s and 20 words instead of 100 s and 200).

Baseline (decision): `baseline: initial_model` (the default) generates the baseline ONCE, at the start of training,
from the model as it is before the first optimizer step, with the same streams and settings, and writes it to
`<output_dir>/win_rate/baseline_initial_model.jsonl` (public per-second rows). The win rate then measures what
training changed, needs no external file, and is stable across evaluations (same baseline every time). A resumed
run reads that file back; if it is gone, the baseline is regenerated from the resumed weights and a warning says so.
`baseline: <path>` judges against a predictions file in the public row format instead (e.g. a GPT-4o-mini or
LLaVA-Video run), read once at bind time: a missing file fails before training starts.

Judge: `judge: {kind: offline, margin: 0.02}` (default; deterministic word-level ROUGE-L against the reference) or
`{kind: openai, base_url, model, api_key_env, timeout, max_attempts, backoff_base, seed, concurrency}` (the key is
read from the environment variable NAMED by `api_key_env`; a missing key fails at bind time, on every rank). Verdicts
are cached in `<output_dir>/win_rate/judge_cache.jsonl`; an unreachable judge costs a warning, not the run.

Distributed (every rank calls the hooks; nothing below can leave one rank waiting for a collective the others skip):
- ZeRO-3, `zero3_generation: gather` (default): the parameters are partitioned and each forward would all-gather
  every layer collectively. Instead, all ranks gather the full weights ONCE for the evaluation and take DeepSpeed's
  forward hooks off (`deepspeed.runtime.zero.stage3.unwrap_model_for_generation`, DeepSpeed's own helper for
  generation under ZeRO-3; hooks and partitions are restored when it exits). Inside it a forward is local, so the
  streams are SPLIT over the ranks (rank r streams r, r+W, ...), each with the plain engine, and the outputs are
  gathered to rank 0 (`all_gather_object`). Cost: one full copy of the weights per rank during the evaluation.
- ZeRO-3, `zero3_generation: lockstep` (no extra memory, much slower: one collective per layer per forward): every
  rank streams ALL the streams through the partitioned model; `LockstepEngine` broadcasts rank 0's sampled token at
  each decode step (what HF generate's `synced_gpus` does), so the token sequences, hence the number and shapes of
  forwards, are identical on every rank whatever the numerics. Its forwards run under `no_grad`, not
  `inference_mode`: parameter buffers gathered there are reused by training afterwards. Also the fallback when the
  DeepSpeed engine is not reachable from the trainer.
- Without partitioned weights (one process, DDP, ZeRO-1/2) only rank 0 generates; the others wait for the metrics.
- Rank 0 judges; the metrics are broadcast so every rank logs the same numbers.

The model is switched to eval mode for the evaluation (dropout off; HF gradient checkpointing only acts in training
mode) and back to its previous mode after, and `config.use_cache` is restored; gradients are never built.

Files in `<output_dir>/win_rate/`: `predictions_step{N}.jsonl` (the model's per-second rows, to re-judge with
`python -m streaming_vlm.eval judge`), `report_step{N}.json` (the full report), and `<output_dir>/win_rate.json`
({step: metrics}).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from transformers import TrainerCallback

from streaming_vlm.errors import UserError
from streaming_vlm.inference.engine import StreamingEngine
from streaming_vlm.training.callbacks import log_metrics

INITIAL_MODEL = "initial_model"
ZERO3_MODES = ("gather", "lockstep")
SUBDIR = "win_rate"
SUMMARY_FILE = "win_rate.json"
BASELINE_FILE = "baseline_initial_model.jsonl"
# Inference settings the callback uses unless `inference` overrides them: greedy decoding, so evaluations are
# reproducible, and no progress bar (StreamingConfig's own defaults otherwise, the CLI's).
INFERENCE_DEFAULTS = {"temperature": 0.0, "seed": 0, "progress": False}
METRIC_KEYS = {  # log key -> report["overall"] key
    "eval/win_rate": "win_rate_pct",
    "eval/votes": "votes",
    "eval/model_votes": "model_votes",
    "eval/baseline_votes": "baseline_votes",
    "eval/ties": "ties",
    "eval/invalid": "invalid",
    "eval/missing": "missing_votes",
}


def _plain(value):
    """OmegaConf containers (what hydra.utils.instantiate passes for nested config) -> plain Python."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _dist():
    d = torch.distributed
    return d if d.is_available() and d.is_initialized() and d.get_world_size() > 1 else None


def _rank() -> int:
    d = _dist()
    return d.get_rank() if d else 0


def _broadcast_object(obj, device):
    """rank 0's `obj` on every rank (collective when distributed)."""
    d = _dist()
    if d is None:
        return obj
    box = [obj]
    kwargs = {"device": device} if d.get_backend() == "nccl" else {}
    d.broadcast_object_list(box, src=0, **kwargs)
    return box[0]


def is_partitioned(model) -> bool:
    """True when ZeRO-3 partitions the weights (DeepSpeed tags each parameter with a `ds_id`)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def base_model(model):
    """The Qwen3VLForConditionalGeneration inside a peft wrapper (LoRA layers are injected in place, so its forward
    includes the adapters)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


_ENGINE_RUN = getattr(StreamingEngine._run, "__wrapped__", StreamingEngine._run)  # the body, without inference_mode


class LockstepEngine(StreamingEngine):
    """The streaming engine for ranks that must forward in lock-step (ZeRO-3): every decode step uses rank 0's
    token, and forwards run under no_grad instead of inference_mode."""

    def _sample(self, logits, context, n_generated, min_new):
        token = super()._sample(logits, context, n_generated, min_new)
        d = _dist()
        if d is not None:
            box = torch.tensor([token], dtype=torch.long, device=self.device)
            d.broadcast(box, src=0)
            token = int(box.item())
        return token

    def _run(self, *args, **kwargs):
        with torch.no_grad():
            return _ENGINE_RUN(self, *args, **kwargs)

    def _slot_decoder(self, max_new):
        return None  # ZeRO-3 hooks fetch weights inside every forward: eager decoding only

    def _vision(self, *args):
        with torch.no_grad():  # the vision tower ahead of the forward, under no_grad like `_run`
            return getattr(StreamingEngine._vision, "__wrapped__", StreamingEngine._vision)(self, *args)


def metrics_from_report(report: Mapping[str, Any]) -> dict[str, float]:
    """The logged numbers: eval/win_rate (percent; NaN when no vote counts) and the vote counts."""
    overall = report["overall"]
    out = {}
    for key, field in METRIC_KEYS.items():
        value = overall[field]
        out[key] = float("nan") if value is None else (float(value) if key == "eval/win_rate" else int(value))
    return out


def judge_from_config(judge) -> Any:
    """`offline` | `openai` | {kind: ..., settings...} -> a Judge (streaming_vlm.eval.make_judge)."""
    from streaming_vlm.eval import make_judge

    judge = _plain(judge)
    if judge is None or isinstance(judge, str):
        return make_judge(judge or "offline")
    if not isinstance(judge, Mapping):
        raise UserError(f"eval judge must be 'offline', 'openai' or a mapping with 'kind', got {judge!r}")
    settings = dict(judge)
    kind = settings.pop("kind", "offline")
    try:
        return make_judge(kind, **settings)
    except TypeError as err:
        raise UserError(f"eval judge settings: {err}") from None


class WinRateCallback(TrainerCallback):
    def __init__(self, reference: str, video_root: str | None = None, baseline: str = INITIAL_MODEL,
                 every_n_steps: int = 0, minutes: float | None = 2.0, max_streams: int | None = 2,
                 judge: Any = "offline", segment_seconds: float = 30.0, min_words: int = 20, missing: str = "loss",
                 inference: Mapping[str, Any] | None = None, at_train_end: bool = True, concurrency: int = 4,
                 zero3_generation: str = "gather"):
        if not reference:
            raise UserError("eval win rate: 'reference' (an eval_inf.jsonl file) is required")
        if int(every_n_steps) < 0:
            raise UserError(f"eval every_n_steps must be >= 0, got {every_n_steps}")
        if minutes is not None and not float(minutes) > 0:
            raise UserError(f"eval minutes must be > 0 (or null for whole streams), got {minutes}")
        if max_streams is not None and int(max_streams) < 1:
            raise UserError(f"eval max_streams must be >= 1 (or null for all), got {max_streams}")
        if zero3_generation not in ZERO3_MODES:
            raise UserError(f"eval zero3_generation must be one of {', '.join(ZERO3_MODES)}, got {zero3_generation!r}")
        self.zero3_generation = zero3_generation
        self.reference_path = str(reference)
        self.video_root = str(video_root) if video_root else os.path.dirname(os.path.abspath(self.reference_path))
        self.baseline = str(baseline or INITIAL_MODEL)
        self.every_n_steps = int(every_n_steps)
        self.minutes = None if minutes is None else float(minutes)
        self.max_streams = None if max_streams is None else int(max_streams)
        self.judge_config = _plain(judge)
        self.segment_seconds = float(segment_seconds)
        self.min_words = int(min_words)
        self.missing = str(missing)
        self.inference = dict(_plain(inference) or {})
        self.at_train_end = bool(at_train_end)
        self.concurrency = int(concurrency)
        self.trainer = None
        self.processor = None
        self.baseline_outputs = None  # SystemOutputs (file) or {video: [segments]} (initial model)
        self._done: set[int] = set()

    # ---- setup --------------------------------------------------------------------------------------------------
    @property
    def end_seconds(self) -> float | None:
        return None if self.minutes is None else 60.0 * self.minutes

    def bind(self, trainer, processor) -> None:
        """Check everything that can be checked before training (on every rank, so a bad config stops all ranks)."""
        from streaming_vlm.eval import load_outputs, segments_for
        from streaming_vlm.eval.jsonl import read_rows_strict
        from streaming_vlm.eval.win_rate import MISSING_POLICIES
        from streaming_vlm.inference.config import StreamingConfig
        from streaming_vlm.inference.engine import build_template, check_cache_budget

        self.trainer, self.processor = trainer, processor
        if self.missing not in MISSING_POLICIES:
            raise UserError(f"eval missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}")
        rows = read_rows_strict(self.reference_path, "reference")
        videos: list[str] = []
        for row in rows:
            if "content" not in row:
                raise UserError(f"eval reference {self.reference_path}: expected Inf-Stream-Eval rows "
                                "{video, title, content, preasr}")
            if row.get("video") not in videos:
                videos.append(row.get("video"))
        self.streams = videos[: self.max_streams] if self.max_streams else videos
        from streaming_vlm.inference.frames import VideoFrameSource

        for video in self.streams:
            path = self.video_path(video)
            if not os.path.isfile(path):
                raise UserError(f"eval video not found: {path} (from {self.reference_path}; "
                                "set callbacks.win_rate.video_root)")
            VideoFrameSource(path)  # opens it: an undecodable file fails here, on every rank, not mid-training
        self.reference_rows = self.trim_reference(rows)
        segments_for(self.reference_rows, "inf-streams", self.segment_seconds, self.min_words)  # none: UserError
        self.config = StreamingConfig.from_any({**INFERENCE_DEFAULTS, **self.inference})
        check_cache_budget(build_template(processor, self.config), self.config, self.config.query)
        self.judge = judge_from_config(self.judge_config)
        if self.baseline != INITIAL_MODEL:
            self.baseline_outputs = load_outputs(self.baseline, "baseline")
        self.out_dir = Path(trainer.args.output_dir) / SUBDIR

    def video_path(self, video: str) -> str:
        return video if os.path.isabs(video) else os.path.join(self.video_root, video)

    def trim_reference(self, rows: list[dict]) -> list[dict]:
        """The configured streams' reference rows, cut to the items that end within the streamed part."""
        limit = self.end_seconds
        out = []
        for row in rows:
            if row.get("video") not in self.streams:
                continue
            content = [item for item in row["content"] if limit is None or float(item[1]) <= limit]
            out.append({**row, "content": content})
        return out

    # ---- the three pieces: generate, score, log -------------------------------------------------------------
    def _zero3_mode(self, model) -> str | None:
        """None (weights not partitioned), "gather" or "lockstep"."""
        if not is_partitioned(model):
            return None
        engine = getattr(self.trainer, "model_wrapped", None)
        offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
        if self.zero3_generation == "gather" and offload is not None and hasattr(offload, "forward_hooks"):
            return "gather"
        return "lockstep"

    def _run_streams(self, model, streams, engine_class=None) -> tuple[dict[str, list[dict]], int, float]:
        from streaming_vlm.inference import run_stream

        outputs, tokens, seconds = {}, 0, 0.0
        for video in streams:
            segments = run_stream(model, self.processor, self.video_path(video), self.config, start=0.0,
                                  end=self.end_seconds, engine_class=engine_class)
            outputs[video] = [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segments]
            tokens += sum(int(s.get("tokens", 0)) for s in segments)
            seconds += sum(s["end"] - s["start"] for s in segments)
        return outputs, tokens, seconds

    def generate(self, model) -> tuple[dict[str, list[dict]] | None, dict]:
        """{video: [{start, end, text}]} over the configured streams (on rank 0; None elsewhere) and this rank's
        generation stats. Collective under ZeRO-3 (see the module docstring); rank 0 only otherwise."""
        model = base_model(model)
        mode = self._zero3_mode(model)
        d = _dist()
        rank, world = (d.get_rank(), d.get_world_size()) if d else (0, 1)
        was_training = model.training
        use_cache = getattr(model.config, "use_cache", None)
        text_cfg = getattr(model.config, "text_config", None)
        text_use_cache = getattr(text_cfg, "use_cache", None)
        t0 = time.perf_counter()
        model.eval()
        try:
            with torch.no_grad():
                if mode == "gather":
                    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

                    mine = self.streams[rank::world]
                    with unwrap_model_for_generation(self.trainer.model_wrapped):
                        try:  # inside: DeepSpeed's helper restores its hooks only on a normal exit
                            outputs, tokens, seconds = self._run_streams(model, mine)
                        except Exception as err:  # noqa: BLE001 - reported on every rank below, after the gather
                            outputs, tokens, seconds = {"__error__": f"rank {rank}: {err}"}, 0, 0.0
                elif mode == "lockstep":
                    mine = list(self.streams)
                    outputs, tokens, seconds = self._run_streams(model, mine, LockstepEngine)
                else:
                    mine = list(self.streams)
                    outputs, tokens, seconds = self._run_streams(model, mine)
        finally:
            model.train(was_training)
            if use_cache is not None:
                model.config.use_cache = use_cache
            if text_use_cache is not None:
                text_cfg.use_cache = text_use_cache
        stats = {"streams": len(mine), "stream_seconds": seconds, "tokens": tokens, "mode": mode or "local",
                 "wall_seconds": time.perf_counter() - t0}
        if mode == "gather":
            parts = [outputs]
            if d is not None:  # every rank reaches this gather, also the one whose generation failed
                parts = [None] * world
                d.all_gather_object(parts, outputs)
            errors = [part["__error__"] for part in parts if part and "__error__" in part]
            if errors:
                raise UserError(f"win-rate eval failed: {errors[0]}")
            merged = {k: v for part in parts for k, v in (part or {}).items()}
            outputs = {video: merged[video] for video in self.streams} if rank == 0 else None
        elif rank != 0:
            outputs = None
        return outputs, stats

    def score(self, outputs) -> dict:
        """The report of `win_rate_from_outputs` for `outputs` against the baseline (rank 0)."""
        from streaming_vlm.eval import JudgeCache, win_rate_from_outputs

        if self.baseline_outputs is None:
            raise RuntimeError("no baseline yet: the initial-model baseline is generated at train begin")
        cache = None
        if getattr(self, "out_dir", None) is not None:
            os.makedirs(self.out_dir, exist_ok=True)
            cache = JudgeCache(self.out_dir / "judge_cache.jsonl")
        return win_rate_from_outputs(outputs, self.baseline_outputs, self.reference_rows, self.judge,
                                     protocol="inf-streams", segment_seconds=self.segment_seconds,
                                     min_words=self.min_words, cache=cache, concurrency=self.concurrency,
                                     missing=self.missing)

    def _participates(self, model) -> bool:
        return _rank() == 0 or is_partitioned(base_model(model))

    def _generate_logged(self, model, step: int, what: str) -> dict[str, list[dict]] | None:
        if not self._participates(model):
            return None
        outputs, stats = self.generate(model)
        d = _dist()
        where = f"rank {d.get_rank()}/{d.get_world_size()}" if d else "rank 0/1"
        print(f"win-rate eval ({what}, step {step}, {where}, {stats['mode']}): {stats['streams']} stream(s), "
              f"{stats['stream_seconds']:.0f} s of video, {stats['tokens']} tokens, {stats['wall_seconds']:.1f} s",
              flush=True)
        return outputs

    # ---- baseline from the initial model ----------------------------------------------------------------------
    def _ensure_initial_baseline(self, model, step: int) -> None:
        from streaming_vlm.eval import load_outputs
        from streaming_vlm.eval.jsonl import write_rows

        path = self.out_dir / BASELINE_FILE
        have = _broadcast_object(path.is_file() if _rank() == 0 else None, self._device(model))
        if have:
            if _rank() == 0:
                self.baseline_outputs = load_outputs(path, "baseline")
                print(f"win-rate baseline: {path} (read back)", flush=True)
            return
        if step > 0 and _rank() == 0:
            print(f"warning: win-rate baseline {path} is missing on resume: generating it from the step-{step} "
                  "model instead of the initial one", file=sys.stderr, flush=True)
        outputs = self._generate_logged(model, step, "baseline")
        if _rank() == 0:
            os.makedirs(self.out_dir, exist_ok=True)
            rows = [{"video": v, **seg} for v, segs in outputs.items() for seg in segs]
            tmp = path.with_suffix(".tmp")
            write_rows(tmp, rows)
            os.replace(tmp, path)
            self.baseline_outputs = outputs
            print(f"win-rate baseline: the step-{step} model's outputs -> {path}", flush=True)

    # ---- one evaluation -----------------------------------------------------------------------------------------
    @staticmethod
    def _device(model):
        try:
            return next(model.parameters()).device
        except StopIteration:  # pragma: no cover
            return torch.device("cpu")

    def evaluate(self, model, step: int) -> dict | None:
        """Generate (collective under ZeRO-3), judge on rank 0, log the same metrics on every rank."""
        if step in self._done:
            return None
        self._done.add(step)
        outputs = self._generate_logged(model, step, "model")
        metrics = None
        if _rank() == 0:
            from streaming_vlm.eval.jsonl import write_rows

            os.makedirs(self.out_dir, exist_ok=True)
            write_rows(self.out_dir / f"predictions_step{step}.jsonl",
                       [{"video": v, **seg} for v, segs in outputs.items() for seg in segs])
            try:
                report = self.score(outputs)
            except UserError as err:  # judge unreachable / refused: keep training, say so
                print(f"warning: win-rate eval at step {step} not judged: {err}", file=sys.stderr, flush=True)
            else:
                (self.out_dir / f"report_step{step}.json").write_text(json.dumps(report, indent=2) + "\n")
                metrics = metrics_from_report(report)
                self._record(step, metrics)
                o = report["overall"]
                rate = "n/a" if o["win_rate_pct"] is None else f"{o['win_rate_pct']:.2f}%"
                print(f"win rate at step {step}: {rate} vs {self.baseline_name} (model {o['model_votes']}, "
                      f"baseline {o['baseline_votes']}, ties {o['ties']}, invalid {o['invalid']}, "
                      f"missing {o['missing_votes']} of {o['votes']} votes over {o['segments']} segments)",
                      flush=True)
        metrics = _broadcast_object(metrics, self._device(model))
        if metrics is not None and self.trainer is not None:
            log_metrics(self.trainer, metrics)
        return metrics

    @property
    def baseline_name(self) -> str:
        return "the initial model" if self.baseline == INITIAL_MODEL else self.baseline

    def _record(self, step: int, metrics: dict) -> None:
        from streaming_vlm.training.checkpoints import write_json_atomic

        path = Path(self.trainer.args.output_dir) / SUMMARY_FILE if self.trainer is not None else None
        if path is None:
            return
        record = {}
        if path.exists():
            try:
                record = json.loads(path.read_text())
            except ValueError:
                record = {}
        record[str(step)] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        write_json_atomic(path, record)

    # ---- TrainerCallback hooks ------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.baseline == INITIAL_MODEL and self.baseline_outputs is None:
            self._ensure_initial_baseline(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.evaluate(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.at_train_end:
            self.evaluate(model, state.global_step)
