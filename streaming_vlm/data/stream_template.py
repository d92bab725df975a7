"""The stream template: seconds of (frames, words) -> tokens, labels, vision inputs and mRoPE positions.

This module exists once. Training samples, the eval callback and the inference CLI all go through it, at two
granularities that are tested to produce the same tokens:

- `encode_window(previous, seconds)`: a whole training chunk in one processor call;
- `encode_prefix(previous)`, then per second `encode_second(second)` + the model's reply: the streaming engine.

Layout (ChatML, rendered here by `render_chatml`; the paper's layout on Qwen3-VL):

    <|im_start|>system\n{system prompt}<|im_end|>\n
    <|im_start|>previous text\n{earlier commentary}<|im_end|>\n          (only when there is any)
    <|im_start|>user\nTime=12.0-13.0s<|vision_start|><12.2 seconds><|vision_start|><|video_pad|>…<|vision_end|><|vision_end|><|im_end|>\n
    <|im_start|>assistant\n{words that END in (12, 13]} ...<|im_end|>\n
    … one user/assistant pair per second

Timestamps: the paper's per-second `Time=a-b s` text is kept, and each second's frames are passed to the processor as
one video whose metadata carries the frames' ABSOLUTE times, so Qwen3-VL's own `<t seconds>` stamp (one per
temporal patch of 2 frames) is absolute too. Both say the same thing in two vocabularies: `Time=` delimits the
second the reply covers, `<t seconds>` is what Qwen3-VL was pretrained to read. Chunks never restart near 0 s.

Why we render the turns ourselves, not through the checkpoint's chat template: the layout above is the wire format
StreamingVLM trains, a property of our training rather than of a checkpoint. The hub's Qwen3-VL Instruct template
renders only system (as the first message), user, assistant and tool turns and silently drops any other role, so
through it the previous-text turn would vanish (and with it the replies the engine folds into that block). The
turns are therefore ChatML pieces written here and tokenized by the checkpoint's own tokenizer, whose special tokens
(`<|im_start|>`, `<|im_end|>`, `<|vision_start|>`, `<|video_pad|>`, `<|vision_end|>`) are those of every Qwen3-VL; a
video is written as the hub template writes it and the processor still expands its `<|video_pad|>` per temporal
patch with the absolute timestamps. So every Qwen3-VL checkpoint, the hub's own files, our tiny one, or one we
trained, gives the same tokens for the same stream; a trained checkpoint reproduces its training layout whatever
chat template it ships, and the checkpoint's template stays untouched for ordinary chat use.

Text from outside (earlier commentary, a query, a second's words, a typed question) is plain text: it may not
write one of the tokenizer's special tokens out (`<|im_end|>`, `<|video_pad|>`, ...), since the rendered string is
tokenized whole and such a string would become structure (a turn end, a vision placeholder without features).
`control_token_in` finds one; the encoders raise a `UserError` naming it, and the dataset skips such a record at
index time (counted as `control_token_text`).

Labels are -100 everywhere except the assistant replies: the tokens after `<|im_start|>assistant\n` up to and
including `<|im_end|>`. `" ..."` (SILENCE) ends every reply, so a silent second is exactly `" ..."`.

Where the frames become pixel values. By default the processor call that writes the tokens also resizes, normalises
and patchifies the frames, on the CPU or on `device` (the CLI: its GPU). With `defer_frames=True` (training on a GPU:
`data.process_frames`) the tokens are written from the frames' SHAPES alone: the same processor call on meta tensors
gives the same grid and text without touching a pixel, and the piece carries its uint8 frames instead
(`Encoded.frames`); `process_frames` later runs the same video processor on them where the model runs. A DataLoader
worker then only decodes and tokenizes, and the GPU does the per-pixel work; the pixel values are those of the
immediate call on that device (tests/test_stream_template.py), and the grid is checked against the tokens'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from transformers.video_utils import VideoMetadata

from streaming_vlm.errors import UserError
from streaming_vlm.model.mrope import mrope_positions

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"  # the processor expands the pad per patch
SILENCE = " ..."
PREVIOUS_ROLE = "previous text"
IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = (
    "You are a live sports commentator. Every second you see the newest frames of the match. "
    "Describe what happens in a few words, or stay silent."
)


@dataclass
class Second:
    """One second of stream: its frames (absolute times) and, for training, the words that end in it."""

    start: float
    end: float
    frames: np.ndarray  # (n, H, W, 3) uint8; n = fps frames, padded by the processor to a multiple of 2
    frame_times: Sequence[float]  # absolute video seconds of each frame
    text: str | None = None  # words that END in (start, end], joined by spaces; None when generating


@dataclass
class VisionBudget:
    """Pixel budgets in pixels per frame (min/max) and per sample (total); sides are multiples of `factor`."""

    min_pixels: int = 100 * 32 * 32
    max_pixels: int = 768 * 32 * 32
    total_pixels: int = 24576 * 32 * 32
    factor: int = 32

    def per_frame(self, n_frames: int) -> tuple[int, int]:
        """(min, max) pixels for each of `n_frames` frames so the sample stays inside `total_pixels`."""
        cap = min(self.max_pixels, self.total_pixels // max(n_frames, 1))
        floor = min(self.min_pixels, cap)
        return floor, max(cap, self.factor * self.factor)


@dataclass
class Encoded:
    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long, IGNORE_INDEX outside replies
    position_ids: torch.Tensor  # (3, L) long, mRoPE t/h/w starting at the requested offset
    pixel_values_videos: torch.Tensor | None  # (patches, C·T·P·P) or None
    video_grid_thw: torch.Tensor | None  # (n_videos, 3): one video per second
    next_position: int  # first free position after this piece
    frames: dict | None = None  # defer_frames: the frames `process_frames` turns into pixel_values_videos

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def at(self, start: int) -> "Encoded":
        """The same piece placed at position `start`: every mRoPE axis moves by the same amount (a piece's
        positions are its start plus offsets that do not depend on it)."""
        delta = int(start) - int(self.position_ids.min()) if len(self) else 0
        if delta == 0:
            return self
        return replace(self, position_ids=self.position_ids + delta, next_position=self.next_position + delta)


def reply_text(words: str | None) -> str:
    """The assistant turn for a second: its words, then the silence placeholder."""
    words = (words or "").strip()
    return f"{words}{SILENCE}" if words else SILENCE


def pad_to_temporal_patch(second: Second, temporal_patch_size: int = 2) -> Second:
    """A second with fewer frames than one temporal patch (a file's tail, or fps < 2) repeats its last frame.

    Qwen3-VL's video processor pads 3 frames to 4 itself but rejects a lone frame; a repeated frame is what its
    padding does anyway, and the timestamp stays the frame's own.
    """
    n = len(second.frames)
    if n == 0 or n >= temporal_patch_size:
        return second
    extra = temporal_patch_size - n
    frames = np.concatenate([second.frames, np.repeat(second.frames[-1:], extra, axis=0)])
    times = list(second.frame_times) + [second.frame_times[-1]] * extra
    return Second(second.start, second.end, frames, times, second.text)


def time_text(start: float, end: float) -> str:
    return f"Time={start:.1f}-{end:.1f}s"


def truncate_tokens(text: str, tokenizer, head: int, tail: int) -> str:
    """Keep the first `head` and last `tail` tokens of `text` (the text sink and the text window)."""
    if not text:
        return ""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= head + tail:
        return text
    kept = ids[:head] + (ids[-tail:] if tail > 0 else [])
    return tokenizer.decode(kept)


def _content_text(item: dict) -> str:
    if item["type"] == "text":
        return item["text"]
    if item["type"] == "video":
        return VIDEO_PLACEHOLDER
    raise ValueError(f"the stream template renders text and video items, not {item['type']!r}")


def render_chatml(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """Messages ({role, content: str | [{type: text|video, ...}]}) as ChatML text, every role kept."""
    parts = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = "".join(_content_text(item) for item in content)
        parts.append(f"{IM_START}{m['role']}\n{content}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def video_kwargs(video_processor, min_pixels: int, max_pixels: int, device=None) -> dict:
    """The video processor's arguments for one piece: our frames (no sampling), our pixel budget, its device."""
    kwargs = {"do_sample_frames": False, "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}
    if hasattr(video_processor, "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = False  # our budget already caps per frame and per sample
    if device is not None:
        kwargs["device"] = str(device)
    return kwargs


def process_frames(processor, pieces: Sequence[dict], device=None) -> torch.Tensor:
    """pixel_values_videos of deferred pieces (`Encoded.frames`, in token order), made on `device` by the processor
    call the template would have made at once. Each piece's grid must be the one its tokens were written for."""
    out = []
    for piece in pieces:
        frames, bounds = piece["frames"], np.cumsum([0, *piece["counts"]]).tolist()
        videos = [frames[a:b].permute(0, 3, 1, 2) for a, b in zip(bounds[:-1], bounds[1:])]
        done = processor.video_processor(videos=videos, return_tensors="pt", **video_kwargs(
            processor.video_processor, piece["min_pixels"], piece["max_pixels"], device))
        grid = done["video_grid_thw"].tolist()
        if grid != piece["grid"]:
            raise RuntimeError(f"the video processor gave grids {grid[:2]}... where the tokens were written for "
                               f"{piece['grid'][:2]}...: the frames changed between the loader and the trainer")
        out.append(done["pixel_values_videos"])
    return torch.cat(out)


class StreamTemplate:
    def __init__(self, processor, system_prompt: str = DEFAULT_SYSTEM_PROMPT, budget: VisionBudget | None = None,
                 device: str | None = None, defer_frames: bool = False):
        self.processor = processor
        self.device = device  # where the video processor resizes/normalises frames (None: where they are, the CPU)
        self.defer_frames = defer_frames  # tokens from the frames' shapes; pixels later (`process_frames`)
        self.tokenizer = processor.tokenizer
        self.system_prompt = system_prompt
        self.budget = budget or VisionBudget()
        self.video_token_id = self.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.control_tokens = sorted(t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special)
        self.im_end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.spatial_merge_size = processor.video_processor.merge_size
        self.temporal_patch_size = processor.video_processor.temporal_patch_size
        probe = [{"role": "user", "content": "x"}]
        bare = self._render(probe)
        prompted = self._render(probe, add_generation_prompt=True)
        # "<|im_start|>assistant\n" as the template writes it: how replies are found for labels.
        self.reply_header_ids = self._ids(prompted[len(bare):])
        # What follows <|im_end|> at the end of a turn ("\n"): the engine appends it after generation.
        closed = self._render([{"role": "assistant", "content": "x"}])
        self.turn_end_ids = self._ids(closed[closed.rindex("<|im_end|>") + len("<|im_end|>"):])

    # ---- text from outside ----------------------------------------------------------------------------------
    def control_token_in(self, text: str | None) -> str | None:
        """The first special token of the tokenizer written out in `text`, or None."""
        if not text or "<" not in text:
            return None
        return next((tok for tok in self.control_tokens if tok in text), None)

    def plain(self, text: str | None, what: str) -> str | None:
        """`text` unchanged; a UserError when it writes out a special token (see the module docstring)."""
        tok = self.control_token_in(text)
        if tok is not None:
            raise UserError(f"{what} contains the special token {tok}: text cannot write the template's own "
                            f"tokens")
        return text

    # ---- messages -------------------------------------------------------------------------------------------
    def prefix_messages(self, previous_text: str = "", query: str | None = None) -> list[dict]:
        messages = [{"role": "system", "content": self.system_prompt}]
        if previous_text:
            messages.append({"role": PREVIOUS_ROLE, "content": self.plain(previous_text, "the previous text")})
        if query:
            messages.append({"role": "user", "content": self.plain(query, "the query")})
        return messages

    def second_messages(self, second: Second) -> list[dict]:
        content = [{"type": "text", "text": time_text(second.start, second.end)}]
        if len(second.frames):
            content.append({"type": "video"})  # below 1 fps a second may have no frame
        user = {"role": "user", "content": content}
        if second.text is None:
            return [user]
        words = self.plain(second.text, f"the commentary of second {second.start:g}")
        return [user, {"role": "assistant", "content": reply_text(words)}]

    # ---- granularities --------------------------------------------------------------------------------------
    def encode_window(self, previous_text: str, seconds: Sequence[Second], query: str | None = None,
                      start: int = 0) -> Encoded:
        """A whole training chunk: prefix + every second with its reply, in one processor call."""
        messages = self.prefix_messages(previous_text, query)
        for s in seconds:
            if s.text is None:
                raise ValueError("training seconds need their text (use '' for a silent second)")
            messages += self.second_messages(s)
        return self._encode(self._render(messages), seconds, start)

    def encode_prefix(self, previous_text: str = "", query: str | None = None, start: int = 0) -> Encoded:
        """System prompt (+ previous text, + an optional user query) for the start of a stream."""
        return self._encode(self._render(self.prefix_messages(previous_text, query)), [], start)

    def encode_second(self, second: Second, start: int) -> Encoded:
        """A new second's user turn with its frames, ending in the generation prompt."""
        user = self.second_messages(Second(second.start, second.end, second.frames, second.frame_times, None))
        return self._encode(self._render(user, add_generation_prompt=True), [second], start)

    def encode_user_text(self, text: str, start: int) -> Encoded:
        """A typed question (interactive mode) as a user turn, ending in the generation prompt."""
        text = self.plain(text, "the question")
        return self._encode(self._render([{"role": "user", "content": text}], add_generation_prompt=True), [], start)

    def encode_reply(self, text: str, start: int) -> Encoded:
        """A reply as the model would have written it after the generation prompt (words, " ...", <|im_end|>\\n)."""
        full = self._render([{"role": "assistant", "content": text}])
        header = self.tokenizer.decode(self.reply_header_ids)
        ids = self._ids(full[len(header):] if full.startswith(header) else full)
        ids_t = torch.tensor(ids, dtype=torch.long)
        labels = ids_t.clone()
        labels[len(ids) - len(self.turn_end_ids):] = IGNORE_INDEX
        pos = torch.arange(start, start + len(ids)).expand(3, -1).clone()
        return Encoded(ids_t, labels, pos, None, None, start + len(ids))

    # ---- internals ------------------------------------------------------------------------------------------
    def _render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return render_chatml(messages, add_generation_prompt)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode(self, text: str, seconds: Sequence[Second], start: int) -> Encoded:
        seconds = [pad_to_temporal_patch(s, self.temporal_patch_size) for s in seconds if len(s.frames)]
        if seconds:
            n_frames = sum(len(s.frames) for s in seconds)
            lo, hi = self.budget.per_frame(n_frames)
            t = self.temporal_patch_size
            # channel-first views of the (T, H, W, 3) frames: the processor's batching copy does the transpose, so
            # the frames are not first copied on their own into channel-first order (the same pixel values)
            videos = [torch.from_numpy(np.asarray(s.frames)).permute(0, 3, 1, 2) for s in seconds]
            metadata = [VideoMetadata(total_num_frames=len(s.frames), fps=1.0, frames_indices=list(s.frame_times))
                        for s in seconds]
            per_video = max(t, math.ceil(max(len(v) for v in videos) / t) * t)
            lo, hi = lo * per_video, hi * per_video
            if self.defer_frames:  # the same call on the frames' shapes: tokens and grid, no pixel work
                shapes = [torch.empty(v.shape, dtype=v.dtype, device="meta") for v in videos]
                out = self.processor(text=[text], videos=shapes, video_metadata=metadata, return_tensors="pt",
                                     videos_kwargs=video_kwargs(self.processor.video_processor, lo, hi))
                pixel_values, grid = None, out["video_grid_thw"]
                frames = {"frames": torch.from_numpy(np.concatenate([s.frames for s in seconds])),
                          "counts": [len(s.frames) for s in seconds], "min_pixels": lo, "max_pixels": hi,
                          "grid": grid.tolist()}
            else:
                out = self.processor(text=[text], videos=videos, video_metadata=metadata, return_tensors="pt",
                                     videos_kwargs=video_kwargs(self.processor.video_processor, lo, hi, self.device))
                pixel_values, grid, frames = out["pixel_values_videos"], out["video_grid_thw"], None
        else:
            out = self.processor.tokenizer([text], add_special_tokens=False, return_tensors="pt")
            pixel_values, grid, frames = None, None, None
        input_ids = out["input_ids"][0]
        labels = self._labels(input_ids)
        positions, next_pos = mrope_positions(input_ids, grid, video_token_id=self.video_token_id,
                                              spatial_merge_size=self.spatial_merge_size, start=start)
        return Encoded(input_ids, labels, positions, pixel_values, grid, next_pos, frames)

    def _labels(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.tolist()
        labels = [IGNORE_INDEX] * len(ids)
        header, n = self.reply_header_ids, len(self.reply_header_ids)
        i = 0
        while i <= len(ids) - n:
            if ids[i:i + n] == header:
                j = i + n
                while j < len(ids) and ids[j] != self.im_end_id:
                    labels[j] = ids[j]
                    j += 1
                if j < len(ids):
                    labels[j] = ids[j]  # <|im_end|> is learned: it is how the model ends a second
                i = j + 1
            else:
                i += 1
        return torch.tensor(labels, dtype=torch.long)
