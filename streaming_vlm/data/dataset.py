"""The streaming-SFT dataset: chunks of commentated video -> encoded samples, and the trainer's build helpers.

`build_train_dataset(data_cfg, processor)` reads a source, validates every record WITHOUT decoding video (bad rows
are counted by reason and dropped), cuts the chunks, and checks the bad fraction (one `UserError` if over).
`StreamDataset.__getitem__` decodes the chunk's frames with `VideoReader` (opened lazily inside each DataLoader
worker) at a strict fps, puts each word in the second in which it ENDS, and encodes through
`StreamTemplate.encode_window` (pixel budgets: the template's `VisionBudget`, factor 32; the processor resizes).
A chunk that fails at load time returns a marker `{"bad_sample": reason, ...}` that the collator counts and drops.

data_cfg keys (defaults in `DATA_DEFAULTS`; mirrored in configs/data/*.yaml):

    root                 video root for relative paths (default: the data file's directory)
    train_file           JSONL (conversation / Inf-Stream-Eval / flat rows), `save_to_disk` dir, .parquet, hf:name
    eval_file            optional, same forms (`build_eval_dataset`)
    split                split name for HF datasets (default "train")
    stage                "stream" (overlapped windows over whole games) | "clip" (stage-2 clips, whole) |
                         "window" (rows already cut into windows, e.g. s12w24: each used as it is)
    window, stride       window length / stride in whole seconds (24 / 12)
    min_words            words a window must keep (null -> 2 x window for stream, 1 for clip and window)
    text_sink            first tokens of the previous text kept (512)
    text_sliding_window  last tokens of the previous text kept (512)
    fps                  strict sampling rate (2.0: one temporal patch of 2 frames per second)
    min_pixels           per-frame floor in pixels (100*32*32)
    max_pixels           per-frame cap (768*32*32)
    total_pixels         per-sample cap over all frames (24576*32*32)
    max_bad_fraction     over this fraction of bad records (index time) or samples (load time) -> UserError (0.05)
    system_prompt        null -> stream_template.DEFAULT_SYSTEM_PROMPT
    check_files          stat every video at index time (missing / 0-byte -> counted) (true)
    packing              collator: pack a micro-batch into one row, no cross-sample attention (false)
    max_packed_tokens    collator: tokens per packed row (null -> everything in one row)
    num_workers          DataLoader workers (or auto); read by the trainer, not here
    process_frames       where frames become pixel values: `loader` (the workers run the video processor), `trainer`
                         (workers send uint8 frames, the training process runs it on its device), `auto` (trainer
                         when training on CUDA, else loader; `frames_where`) (auto)
    repeat               times the source counts in the training / held-out mix; read by the trainer (1)
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, OrderedDict
from typing import Any, Mapping

from torch.utils.data import Dataset

from streaming_vlm.data import bad_samples as bad
from streaming_vlm.data.bad_samples import BadSample, bad_marker, check_fraction, format_counts, log_bad
from streaming_vlm.data.chunker import (STAGES, Chunk, chunks_for, previous_text, second_texts, span_seconds,
                                        validate_record)
from streaming_vlm.data.records import StreamRecord
from streaming_vlm.data.sources import open_source
from streaming_vlm.data.stream_template import DEFAULT_SYSTEM_PROMPT, StreamTemplate, VisionBudget
from streaming_vlm.data.video import VideoError, VideoReader
from streaming_vlm.errors import UserError

log = logging.getLogger(__name__)

DATA_DEFAULTS: dict[str, Any] = dict(
    root=None, train_file=None, eval_file=None, split="train", stage="stream", window=24, stride=12,
    min_words=None, text_sink=512, text_sliding_window=512, fps=2.0, min_pixels=100 * 32 * 32,
    max_pixels=768 * 32 * 32, total_pixels=24576 * 32 * 32, max_bad_fraction=0.05, system_prompt=None,
    check_files=True, packing=False, max_packed_tokens=None, num_workers=4, process_frames="auto",
)
PROCESS_FRAMES = ("auto", "loader", "trainer")
END_TOLERANCE = 0.5  # a window may reach this far past the last frame (rounding of spans vs. file duration)


class StreamDataset(Dataset):
    """Chunks of one source; `__getitem__` -> {input_ids, labels, position_ids (3,L), pixel_values_videos,
    video_grid_thw, index} or a bad-sample marker."""

    def __init__(self, source, template: StreamTemplate, *, stage: str = "stream", window: int = 24,
                 stride: int = 12, min_words: int | None = None, text_sink: int = 512,
                 text_sliding_window: int = 512, fps: float = 2.0, check_files: bool = True):
        if stage not in STAGES:
            raise UserError(f"data.stage must be one of {', '.join(STAGES)}, got {stage!r}")
        window, stride = _whole_seconds("window", window), _whole_seconds("stride", stride)
        if min_words is not None and (not float(min_words).is_integer() or min_words < 0):
            raise UserError(f"data.min_words must be a whole number >= 0 or null, got {min_words!r}")
        min_words = None if min_words is None else int(min_words)
        if fps <= 0:
            raise UserError(f"data.fps must be > 0, got {fps!r}")
        self.source = source
        self.template = template
        self.stage, self.window, self.stride, self.min_words = stage, window, stride, min_words
        self.text_sink, self.text_sliding_window = text_sink, text_sliding_window
        self.fps = float(fps)
        self._records: OrderedDict[int, StreamRecord] = OrderedDict()
        self.index_bad: Counter = Counter()
        self.chunks: list[Chunk] = []
        self.n_records = len(source)
        self.windows_too_few_words = 0
        self._index(check_files)

    # ---- index time: no decoding --------------------------------------------------------------------------------
    def _index(self, check_files: bool) -> None:
        for i in range(self.n_records):
            try:
                rec = self.source[i]
                validate_record(rec)
                token = self.template.control_token_in(" ".join(w for _, _, w in rec.words))
                if token is not None:
                    raise BadSample(bad.CONTROL_TOKEN_TEXT, f"{rec.meta.get('where', rec.video)}: the commentary "
                                                            f"writes out the special token {token}")
                if check_files:
                    check_video_file(rec.video)
            except BadSample as err:
                self.index_bad[err.reason] += 1
                log_bad(err.reason, "at index time", err.detail)
                continue
            chunks = chunks_for(i, rec, self.stage, self.window, self.stride, self.min_words)
            if self.stage == "stream":
                self.windows_too_few_words += _n_windows(rec, self.window, self.stride) - len(chunks)
            self.chunks += chunks
        if self.index_bad:
            log.warning("dropped %d of %d records at index time: %s", sum(self.index_bad.values()),
                        self.n_records, format_counts(self.index_bad))
        log.info("%d %s chunks from %d records (%d windows under min_words)", len(self.chunks), self.stage,
                 self.n_records - sum(self.index_bad.values()), self.windows_too_few_words)

    def check_bad_fraction(self, max_bad_fraction: float) -> None:
        check_fraction(self.index_bad, self.n_records, max_bad_fraction, "the data records (index time)")
        if not self.chunks:
            raise UserError(f"no training chunks: {self.n_records} records, {format_counts(self.index_bad)} bad, "
                            f"{self.windows_too_few_words} windows under min_words; check data.train_file, "
                            "data.window and data.min_words")

    # ---- load time ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        chunk = self.chunks[i]
        try:
            return self.load(i)
        except BadSample as err:
            log_bad(err.reason, f"sample {i} (record {chunk.record}, {chunk.start}-{chunk.end}s)", err.detail)
            return bad_marker(err.reason, i, err.detail)

    def load(self, i: int) -> dict[str, Any]:
        """The encoded sample; raises BadSample instead of returning a marker."""
        chunk = self.chunks[i]
        rec = self.record(chunk.record)
        # A reader per sample, closed with it: an open decord reader keeps memory from every batch it decoded
        # (GiBs after a few dozen 24-s windows, per worker) and seeks slower than a fresh one (BENCHMARKS.md).
        reader = VideoReader(rec.video, fps=self.fps)
        try:
            duration = reader.duration
            if min(chunk.end, rec.end) > duration + END_TOLERANCE:
                raise BadSample(bad.WINDOW_PAST_END, f"window {chunk.start}-{chunk.end}s (span ends "
                                                     f"{rec.end:g}s) is past the end of {rec.video} ({duration:.2f}s)")
            seconds = reader.seconds(chunk.start, chunk.end, texts=second_texts(rec, chunk.start, chunk.end))
        except VideoError as err:
            raise BadSample(video_error_reason(rec.video), str(err)) from None
        if not any(len(s.frames) for s in seconds):
            raise BadSample(bad.CORRUPT_VIDEO, f"no frames decoded in {chunk.start}-{chunk.end}s of {rec.video}")
        prev = previous_text(rec, chunk.start, self.template.tokenizer, self.text_sink, self.text_sliding_window)
        enc = self.template.encode_window(prev, seconds)
        sample = {
            "input_ids": enc.input_ids,
            "labels": enc.labels,
            "position_ids": enc.position_ids,
            "pixel_values_videos": enc.pixel_values_videos,
            "video_grid_thw": enc.video_grid_thw,
            "index": i,
        }
        if enc.frames is not None:  # data.process_frames=trainer: uint8 frames, pixels made by the trainer
            sample["video_frames"] = enc.frames
        return sample

    def record(self, r: int) -> StreamRecord:
        """Source record `r`, re-read on demand (a few kept per process: overlapping windows share a game)."""
        rec = self._records.get(r)
        if rec is None:
            rec = self.source[r]
            self._records[r] = rec
            while len(self._records) > 4:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(r)
        return rec

    def __getstate__(self):  # workers start with an empty record cache
        state = dict(self.__dict__)
        state["_records"] = OrderedDict()
        return state

    def describe(self, i: int) -> dict[str, Any]:
        """Where sample i comes from (for logs and tests)."""
        c = self.chunks[i]
        rec = self.record(c.record)
        return {"video": rec.video, "start": c.start, "end": c.end, "n_words": c.n_words, "record": c.record,
                "where": rec.meta.get("where", "")}


def _whole_seconds(name: str, v) -> int:
    try:
        ok = not isinstance(v, bool) and float(v).is_integer() and v >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"data.{name} must be a whole number of seconds >= 1, got {v!r}")
    return int(v)


def _n_windows(rec: StreamRecord, window: int, stride: int) -> int:
    lo, hi = span_seconds(rec)
    return len(range(lo, hi - window + 1, stride)) if hi - lo >= window else 1


def check_video_file(path: str) -> None:
    """Cheap index-time check: the file exists and is not empty (decoding problems show at load time)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise BadSample(bad.MISSING_VIDEO, f"video not found: {path}") from None
    if size == 0:
        raise BadSample(bad.EMPTY_VIDEO, f"video is empty (0 bytes): {path}")


def video_error_reason(path: str) -> str:
    try:
        check_video_file(path)
    except BadSample as err:
        return err.reason
    return bad.CORRUPT_VIDEO


# ---- build helpers for the trainer --------------------------------------------------------------------------------
def data_config(data_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """DATA_DEFAULTS overridden by data_cfg (a dict or an OmegaConf node); unknown keys are a UserError."""
    cfg = dict(DATA_DEFAULTS)
    if data_cfg is not None and not isinstance(data_cfg, dict):
        try:  # an OmegaConf node (Hydra): resolve interpolations to plain values
            from omegaconf import OmegaConf

            data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
        except (ImportError, ValueError):
            pass
    given = dict(data_cfg or {})
    unknown = sorted(set(given) - set(cfg))
    if unknown:
        raise UserError(f"unknown data config key(s) {', '.join(unknown)}; known: {', '.join(sorted(cfg))}")
    cfg.update({k: v for k, v in given.items()})
    return cfg


def frames_where(choice, cuda: bool) -> tuple[str, str]:
    """(`loader` | `trainer`, why) for `data.process_frames`.

    Why the trainer on CUDA: the video processor's resize, normalisation and patchify are most of a window's CPU cost
    in a worker, and the trainer's GPU does them in milliseconds; workers then decode and tokenize only, and send
    uint8 frames (a quarter of the float pixel values' bytes). On a CPU the training process would do that work
    itself, on the cores the workers share: there the workers keep it."""
    choice = str(choice if choice is not None else "auto").lower()
    if choice not in PROCESS_FRAMES:
        raise UserError(f"data.process_frames must be one of {', '.join(PROCESS_FRAMES)}, got {choice!r}")
    if choice != "auto":
        return choice, f"data.process_frames={choice}"
    if cuda:
        return "trainer", "data.process_frames=auto, training on CUDA"
    return "loader", "data.process_frames=auto, no CUDA"


def build_template(data_cfg: Mapping[str, Any] | None, processor) -> StreamTemplate:
    """The dataset's template; where its frames become pixels follows `frames_where` (`auto`: CUDA available; the
    trainer resolves it for its own device first, `training.data.frames_choice`)."""
    import torch

    cfg = data_config(data_cfg)
    where, _ = frames_where(cfg["process_frames"], torch.cuda.is_available())
    budget = VisionBudget(min_pixels=int(cfg["min_pixels"]), max_pixels=int(cfg["max_pixels"]),
                          total_pixels=int(cfg["total_pixels"]))
    if not 0 < budget.min_pixels <= budget.max_pixels <= budget.total_pixels:
        raise UserError(f"data pixel budgets must satisfy 0 < min_pixels <= max_pixels <= total_pixels, got "
                        f"{budget.min_pixels}/{budget.max_pixels}/{budget.total_pixels}")
    return StreamTemplate(processor, cfg["system_prompt"] or DEFAULT_SYSTEM_PROMPT, budget,
                          defer_frames=where == "trainer")


def build_dataset(data_cfg: Mapping[str, Any] | None, processor, file_key: str = "train_file") -> StreamDataset:
    cfg = data_config(data_cfg)
    if not cfg[file_key]:
        raise UserError(f"data.{file_key} is not set")
    max_bad = float(cfg["max_bad_fraction"])
    if not 0 <= max_bad <= 1:
        raise UserError(f"data.max_bad_fraction must be in [0, 1], got {max_bad}")
    source = open_source(cfg[file_key], cfg["root"], cfg["split"])
    ds = StreamDataset(source, build_template(cfg, processor), stage=cfg["stage"], window=cfg["window"],
                       stride=cfg["stride"], min_words=cfg["min_words"], text_sink=int(cfg["text_sink"]),
                       text_sliding_window=int(cfg["text_sliding_window"]), fps=float(cfg["fps"]),
                       check_files=bool(cfg["check_files"]))
    ds.check_bad_fraction(max_bad)
    return ds


def build_train_dataset(data_cfg: Mapping[str, Any] | None, processor) -> StreamDataset:
    """The training dataset from data_cfg (see the module docstring for the keys)."""
    return build_dataset(data_cfg, processor, "train_file")


def build_eval_dataset(data_cfg: Mapping[str, Any] | None, processor) -> StreamDataset:
    return build_dataset(data_cfg, processor, "eval_file")


def build_bad_sample_tracker(data_cfg: Mapping[str, Any] | None, dataset: StreamDataset,
                             epochs: float = 1.0) -> bad.BadSampleTracker:
    """The main-process tracker the trainer feeds every batch to (`tracker.update(batch)`)."""
    cfg = data_config(data_cfg)
    return bad.BadSampleTracker(float(cfg["max_bad_fraction"]), expected_total=math.ceil(len(dataset) * epochs),
                                index_bad=dataset.index_bad, index_total=dataset.n_records)


def count_vision_tokens(sample: Mapping[str, Any], merge_size: int = 2) -> int:
    grid = sample.get("video_grid_thw")
    if grid is None:
        return 0
    return int((grid.prod(-1) // (merge_size * merge_size)).sum())
