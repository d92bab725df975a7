"""`StreamingConfig`: every knob of streaming inference, shared by the CLI, the Python API, the presets and the
training eval callback. A plain dict with the same keys works wherever a config is taken."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from streaming_vlm.errors import UserError

POS_MODES = ("contiguous", "native")
# More frames a second than any camera gives is a typo (1e9), not a setting: reject it before anything is read.
MAX_FPS = 120.0
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


@dataclass
class StreamingConfig:
    model_path: str | None = None
    video_path: str | None = None
    output_path: str | None = None  # WebVTT file; None = cues printed to stdout
    fps: float = 2.0  # frames read per second of video (2 frames = one temporal patch)
    attn_implementation: str = "auto"  # flash_attention_2 where flash-attn imports, else sdpa
    window_size: int = 16  # seconds of vision kept in the cache
    text_sink: int = 512  # head tokens of the previous-text block kept
    text_sliding_window: int = 512  # tail tokens of the previous-text block kept
    max_cache_tokens: int = 65536  # hard cap; a window that could exceed it is rejected up front
    max_new_tokens: int = 20  # per second
    min_new_tokens: int = 0  # >0 suppresses <|im_end|> before that many tokens (benchmarks force 20)
    max_answer_tokens: int = 64  # per interactive answer
    temperature: float = 0.9  # 0 = greedy
    repetition_penalty: float = 1.05
    query: str | None = None  # a standing user instruction after the system prompt
    previous_text: str | None = None  # commentary before the stream starts
    system_prompt: str | None = None  # None = the stream template's default
    pos_mode: str = "contiguous"  # "native" = positions keep growing (ablation)
    interactive: bool = False  # read questions from stdin during the stream
    emit_json: str | None = None  # "-" = JSON lines on stdout, else a path
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    start: float = 0.0  # stream from this video second
    end: float | None = None  # … to this one (None = end of file)
    min_pixels: int | None = None  # per-frame vision budget overrides (None = the template's, see engine)
    max_pixels: int | None = None
    total_pixels: int | None = None
    progress: bool = True  # tqdm bar on stderr
    eager: bool = False  # debugging: no torch.compile, no CUDA graph (the engine's plan); the same results
    max_lag: float = 2.0  # live sources: complete seconds that may wait before the oldest is dropped
    stall_timeout: float = 10.0  # live sources: seconds without a frame after which the run ends

    @classmethod
    def from_any(cls, config: "StreamingConfig | dict[str, Any] | None" = None) -> "StreamingConfig":
        if config is None:
            config = {}
        if isinstance(config, StreamingConfig):
            config = dataclasses.asdict(config)
        if not isinstance(config, dict):
            raise UserError(f"config must be a dict or StreamingConfig, got {type(config).__name__}")
        unknown = sorted(set(config) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**config).validate()

    def validate(self) -> "StreamingConfig":
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise UserError(message)

        for f in fields(self):  # each field of its declared type: a `--set KEY=abc` or YAML typo is one clear line
            value, declared = getattr(self, f.name), [t.strip() for t in str(f.type).split("|")]
            allowed = tuple(t for name in declared for t in _TYPES.get(name, ()))
            if value is None and "None" in declared or not allowed:
                continue
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                kinds = " or ".join(n if n != "None" else "null" for n in declared)
                raise UserError(f"{f.name} must be {kinds}, got {value!r}")
        need(math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS,
             f"fps must be > 0 and at most {MAX_FPS} frames per second, got {self.fps}")
        for name in ("temperature", "repetition_penalty", "start"):
            need(math.isfinite(getattr(self, name)), f"{name} must be a finite number, got {getattr(self, name)}")
        need(self.end is None or math.isfinite(self.end), f"end must be a finite number, got {self.end}")
        need(int(self.window_size) >= 1, f"window_size must be >= 1 second, got {self.window_size}")
        need(self.text_sink >= 0 and self.text_sliding_window >= 0, "text_sink and text_sliding_window must be >= 0")
        need(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        need(0 <= self.min_new_tokens <= self.max_new_tokens,
             f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        need(self.max_answer_tokens >= 1, "max_answer_tokens must be >= 1")
        need(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        need(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        need(self.pos_mode in POS_MODES, f"pos_mode must be one of {', '.join(POS_MODES)}, got {self.pos_mode!r}")
        need(self.max_cache_tokens >= 1, "max_cache_tokens must be >= 1")
        need(self.start >= 0, f"start must be >= 0, got {self.start}")
        need(self.end is None or self.end > self.start, f"end ({self.end}) must be after start ({self.start})")
        for name in ("min_pixels", "max_pixels", "total_pixels"):
            value = getattr(self, name)
            need(value is None or value > 0, f"{name} must be > 0")
        need(self.max_lag >= 1, f"max_lag must be >= 1 second, got {self.max_lag}")
        need(self.stall_timeout > 0, f"stall_timeout must be > 0 seconds, got {self.stall_timeout}")
        self.window_size = int(self.window_size)
        return self
