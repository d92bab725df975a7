"""`StreamingEngine`: one second in, one line of commentary out, in bounded memory.

Every token comes from training's stream template (`streaming_vlm.data.stream_template`), at the cache's next position:

    start(previous_text, query)  system turn [+ previous text] [+ query]                 -> SINK / PREVIOUS / QUERY
    step(second)                 evict; the second's frames + "<|im_start|>assistant\\n"  -> USER i; a reply of up to
                                 max_new_tokens, closed by <|im_end|> "\\n"                -> REPLY i
    ask(question)                a user turn at the current second + the answer         -> QUESTION i / ANSWER i
    stream(seconds)              step() over a source; with `lookahead`, second i+1 is read, encoded and run through
                                 the vision tower while reply i decodes (`prepare`)

`start()` chooses how it runs, once (`choose_plan`, logged in one line):

    fast path   a Qwen3-VL model nothing trains, sdpa or flash_attention_2: our text stack (`model/text_step.py`) and
                the slot decoder (`graph_decode.py`), sampled on the device; on CUDA unless `eager`, a compiled prefill,
                CUDA-graphed decode steps, compiled vision blocks (`model/compiled_blocks.py`), frames resized on
                the GPU and a Triton kernel rotating evicted keys.
    reference   anything else (a model being trained, eager attention): transformers' unpatched forward on the
                `StreamingCache`, one forward a token, sampled on the host; the parity tests hold the fast path to it.

The K/V buffers have one owner, the cache (its two banks, `cache.py`): on the fast path every piece is written into
room the cache reserves (`reserve`, then `grow`), and the slot decoder steps over the banks; neither allocates any.
A path that cannot run raises; nothing falls back silently.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper

from streaming_vlm.data.stream_template import (DEFAULT_SYSTEM_PROMPT, SILENCE, Encoded, Second, StreamTemplate,
                                                VisionBudget, reply_text, truncate_tokens)
from streaming_vlm.errors import UserError
from streaming_vlm.inference.cache import (ANSWER, PREVIOUS, QUERY, QUESTION, REPLY, SINK, USER, PieceBuffers,
                                           StreamingCache)
from streaming_vlm.inference.config import StreamingConfig
from streaming_vlm.inference.eviction import StreamingPolicy, cache_bound
from streaming_vlm.inference.graph_decode import SlotDecoder
from streaming_vlm.inference.timing import Timings, wall_phase
from streaming_vlm.inference.transfer import to_device
from streaming_vlm.inference.rotation_kernel import require_rotation_kernel
from streaming_vlm.model.compiled_blocks import compile_forwards, tracing_settings, vision_blocks
from streaming_vlm.model.text_step import chunk_attention, text_step_for
from streaming_vlm.model.vision_grid import VisionGrids


def vision_budget(config: StreamingConfig) -> VisionBudget:
    """Per-frame pixel budget: what a training window of `window_size` seconds at `fps` gives each frame (training
    caps a window's vision at `total_pixels`), so inference sees frames at training's resolution."""
    base = VisionBudget()
    min_px = config.min_pixels or base.min_pixels
    max_px = config.max_pixels or base.max_pixels
    total = config.total_pixels or base.total_pixels
    frames_in_window = max(1, math.ceil(config.window_size * config.fps))
    cap = max(min(max_px, total // frames_in_window), base.factor * base.factor)
    return VisionBudget(min_pixels=min(min_px, cap), max_pixels=cap, total_pixels=total, factor=base.factor)


def build_template(processor, config: StreamingConfig) -> StreamTemplate:
    """The stream template with the config's vision budget (frames resized where `Plan.preprocess_device` says)."""
    return StreamTemplate(processor, config.system_prompt or DEFAULT_SYSTEM_PROMPT, budget=vision_budget(config))


@dataclass(frozen=True)
class Plan:
    """How the engine runs a stream (module docstring); results agree across plans up to float rounding."""
    fast: bool  # our text stack and the slot decoder; False: transformers' forward, host-sampled eager decoding
    compiled: bool = False  # torch.compile the prefill's decoder layer, the decode step and the vision blocks (fast only)
    cuda_graph: bool = False  # replay each decode step as a CUDA graph (fast only, CUDA only)
    preprocess_device: str | None = None  # where frames are resized and normalised (None: the CPU)

    def describe(self) -> str:
        if not self.fast:
            return "reference path (transformers forward, eager decode, host sampler)"
        prefill = "compiled per-layer" if self.compiled else "eager"
        decode = ("CUDA-graph" if self.cuda_graph else "eager") + (" compiled" if self.compiled else "")
        return (f"fast path: text stack, {prefill} prefill, {decode} slot decode, on-device sampler, "
                f"{'compiled' if self.compiled else 'eager'} vision blocks, "
                f"frames resized on {self.preprocess_device or 'cpu'}")


def choose_plan(model, device: torch.device, config: StreamingConfig) -> Plan:
    """The fastest plan that runs: the fast path wherever our text stack applies (not eager attention), compiled and
    CUDA-graphed on CUDA unless `config.eager`."""
    lm = model.model.language_model
    fast = lm.config._attn_implementation != "eager" and text_step_for(lm) is not None
    cuda = device.type == "cuda"
    on_gpu = fast and cuda and not config.eager
    return Plan(fast=fast, compiled=on_gpu, cuda_graph=on_gpu, preprocess_device=str(device) if cuda else None)


def build_policy(template: StreamTemplate, config: StreamingConfig) -> StreamingPolicy:
    silence_ids = tuple(template.tokenizer(SILENCE, add_special_tokens=False)["input_ids"])
    return StreamingPolicy(window_size=config.window_size, text_sink=config.text_sink,
                           text_sliding_window=config.text_sliding_window, max_cache_tokens=config.max_cache_tokens,
                           fold_strip=(tuple(template.turn_end_ids), (template.im_end_id,), silence_ids))


def per_second_max_tokens(template: StreamTemplate, config: StreamingConfig) -> int:
    """Upper bound on one second's tokens in the cache: its user turn at full vision budget + the longest reply."""
    n = max(1, math.ceil(config.fps))  # frames in one second
    t = template.temporal_patch_size
    patches = math.ceil(n / t)
    _, hi = template.budget.per_frame(n)
    # the processor sizes all of a second's frames together (padded to a multiple of t): per frame <= hi·(t·patches)/n
    per_patch = math.floor(hi * patches * t / n / template.budget.factor ** 2) + 1
    big_t = 10_000_000.0  # timestamps grow with the stream; measure the text at a 4-month-old stream
    dummy = Second(big_t, big_t + 1, np.zeros((n, 64, 64, 3), np.uint8), [big_t + k / n for k in range(n)])
    enc = template.encode_second(dummy, 0)
    pads = int((enc.input_ids == template.video_token_id).sum())
    reply = config.max_new_tokens + 1 + len(template.turn_end_ids)
    return len(enc) - pads + patches * (per_patch + 4) + reply


def check_cache_budget(template: StreamTemplate, config: StreamingConfig, query: str | None = None) -> dict:
    """Reject a window the cache budget cannot hold (UserError); returns the numbers."""
    fixed = len(template.encode_prefix("", query)) + 8  # system + query turns, + the previous-text header
    per_second = per_second_max_tokens(template, config)
    policy = build_policy(template, config)
    bound = cache_bound(policy, fixed, per_second)
    if bound > config.max_cache_tokens:
        raise UserError(
            f"window_size {config.window_size} s at {config.fps:g} fps can need {bound} cached tokens "
            f"({per_second} per second + {config.text_sink}+{config.text_sliding_window} text + {fixed} fixed), "
            f"more than max_cache_tokens {config.max_cache_tokens}: lower --window_size/--fps/--text_sliding_window "
            f"or raise --max_cache_tokens")
    return {"bound": bound, "per_second": per_second, "fixed": fixed, "max_cache_tokens": config.max_cache_tokens}


def _joined(features) -> torch.Tensor:
    """Vision features split per video (a tuple, as get_video_features returns them) as one tensor."""
    return torch.cat(list(features)) if isinstance(features, (list, tuple)) else features


class Prepared(NamedTuple):
    """A second preprocessed ahead of its step: its user turn encoded at position 0 (placed by `Encoded.at`), its
    vision tower output where the forward takes one, and `ready`, the side stream's event the step waits for (CUDA)."""
    second: Second
    encoded: Encoded
    video: object | None
    ready: torch.cuda.Event | None = None


def _tensors(obj):
    """Every tensor in a (nested) tuple / list / dict / ModelOutput."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


class StreamingEngine:
    # The classes a stream's cache and the fast path's decoder are built from; a subclass may name its own.
    cache_class: type[StreamingCache] = StreamingCache
    slot_decoder_class: type[SlotDecoder] = SlotDecoder

    def __init__(self, model, processor, config: StreamingConfig | dict | None = None, plan: Plan | None = None):
        self.config = cfg = StreamingConfig.from_any(config)
        self.model = model
        self.processor = processor
        self.device = next(model.parameters()).device
        self.plan = plan
        self.template = build_template(processor, cfg)
        self.tokenizer = self.template.tokenizer
        self.policy = build_policy(self.template, cfg)
        self.im_end_id = self.template.im_end_id
        self._placeholder_ids = {model.config.video_token_id, model.config.image_token_id}  # taken for vision features
        self.timings = Timings(self.device)
        self.inv_freq = model.model.language_model.rotary_emb.inv_freq
        self.vision_grids = VisionGrids(model.model.visual, self.device)  # the tower's per-grid tensors, once
        self.generator = torch.Generator(device=self.device)
        if cfg.seed is not None:
            self.generator.manual_seed(int(cfg.seed))
        else:
            self.generator.seed()
        self.repetition = (RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty)
                           if cfg.repetition_penalty != 1.0 else None)
        self.temperature = TemperatureLogitsWarper(cfg.temperature) if cfg.temperature > 0 else None
        self.text_step = None  # the fast path's text stack (model/text_step.py), set up by `_set_up`
        self.vision_ahead = False  # the vision tower can run ahead of the second's forward
        self.vision_warm = False  # the compiled vision blocks have run once (`_vision_warm_up`)
        self.ready = False  # the plan is chosen and set up (`_set_up`, in the first `start()`)
        self.prepared: Prepared | None = None  # the next second, prepared while this one decoded
        self.side_stream: torch.cuda.Stream | None = None  # CUDA: where seconds are prepared ahead
        self.cache: StreamingCache | None = None
        self.budget: dict | None = None
        self.slots: SlotDecoder | None = None  # fixed-buffer decoder (CUDA graph), built on first use
        self.second_index = -1
        self.current_time = 0.0  # end of the last second processed (where a question is inserted)
        self.tokens_generated = 0

    def start(self, previous_text: str | None = None, query: str | None = None) -> None:
        cfg = self.config
        began = time.perf_counter()
        parts = self.start_seconds = {}  # wall seconds of this start's parts (the CLI's start-up line)
        previous_text = previous_text if previous_text is not None else (cfg.previous_text or "")
        query = query if query is not None else cfg.query
        self.budget = check_cache_budget(self.template, cfg, query)
        if not self.ready:
            with wall_phase(parts, "plan set-up", self.device):
                self._set_up()
        previous = truncate_tokens(previous_text, self.tokenizer, cfg.text_sink, cfg.text_sliding_window)
        # the banks (and the decoder's graphs over them) carry over from the last stream's cache
        self.cache = self.cache_class(self.inv_freq, cfg.pos_mode,
                                      banks=self.cache.banks if self.cache is not None else None)
        self.cache.spare_tokens = self.budget["per_second"]  # a second's pieces fit without a regrow
        self.second_index, self.current_time, self.tokens_generated = -1, 0.0, 0
        with self.timings.section("preprocess"):
            full = self.template.encode_prefix(previous, query, start=0)
            # split the prefix into its turns: system (sink) | previous text | query (kept with the sink)
            n_sys = len(self.template.encode_prefix("", None))
            n_prev = len(self.template.encode_prefix(previous, None))
            ids = full.input_ids.tolist()
        for kind, a, b in ((SINK, 0, n_sys), (PREVIOUS, n_sys, n_prev), (QUERY, n_prev, len(ids))):
            if b > a:
                self.cache.add_segment(kind, ids[a:b], a, b)
        with wall_phase(parts, "decoder prepare", self.device):
            slots = self._slot_decoder(self.config.max_new_tokens)
            if slots is not None:
                slots.prepare()  # capture (and compile) the decode step before the first second, not during it
        with wall_phase(parts, "prefix prefill", self.device), self.timings.section("prefill"):
            self._forward(full)
        if self.plan.compiled:  # compile the prefill's layer and the vision blocks now, not in the first second
            with wall_phase(parts, "prefill warm-up", self.device), tracing_settings():
                self.text_step.warm_up(*self.cache.reserve(self.text_step.WARM_UP_TOKENS))
            if not self.vision_warm:
                with wall_phase(parts, "vision warm-up", self.device):
                    self._vision_warm_up()
        parts["other"] = time.perf_counter() - began - sum(parts.values())

    def _set_up(self) -> None:
        """Choose the plan (unless given), log it in one line and build what it needs."""
        if self.plan is None:
            self.plan = choose_plan(self.model, self.device, self.config)
        plan, lm = self.plan, self.model.model.language_model
        if plan.fast:
            self.text_step = text_step_for(lm)
            if self.text_step is None:
                raise UserError("the fast path needs a Qwen3-VL text stack nothing trains")
            if plan.compiled:
                self.text_step.compile()
                compile_forwards(vision_blocks(self.model))
        if plan.cuda_graph and self.device.type != "cuda":
            raise UserError("CUDA-graph decoding needs a CUDA device")
        if self.device.type == "cuda":  # evictions rotate keys with the Triton kernel: check it now, not mid-stream
            require_rotation_kernel(self.device, next(lm.parameters()).dtype, self.inv_freq.numel() * 2)
        self.template.device = plan.preprocess_device
        # the tower runs ahead with our text stack, or where the forward takes its output (`mm_encoder_outputs`)
        self.vision_ahead = (self.text_step is not None
                             or "mm_encoder_outputs" in inspect.signature(type(self.model).forward).parameters)
        if self.config.progress:
            print(f"engine: {plan.describe()}", file=sys.stderr)
        self.ready = True

    def stream(self, seconds: Iterable[Second], lookahead: bool = True) -> Iterator[dict]:
        """Step through `seconds`, one segment each. `lookahead`: the next second is read and prepared while this
        one's reply decodes (not for a live source, whose next second is not there yet)."""
        it = iter(seconds)

        def read() -> Second | None:  # the time spent waiting for the source is booked as "read"
            with self.timings.section("read", device=False):
                return next(it, None)

        current = read()
        while current is not None:
            ahead: list[Second | None] = []

            def fetch():
                ahead.append(read())
                if ahead[0] is not None:
                    self.prepare(ahead[0], ahead=True)

            segment = self.step(current, while_decoding=fetch if lookahead else None)
            if not ahead:
                ahead.append(read())
            yield segment
            current = ahead[0]

    def prepare(self, second: Second, ahead: bool = False) -> Prepared:
        """Encode `second` and run its vision tower (where the forward takes its output) before its step. `ahead`
        (while a reply decodes): timed as host time; on CUDA on a side stream, so its copies and kernels do not wait
        for the decode steps queued before them."""
        if ahead and self.device.type == "cuda" and self.side_stream is None:
            self.side_stream = torch.cuda.Stream(self.device)
        side = self.side_stream if ahead else None
        with torch.cuda.stream(side) if side is not None else nullcontext():
            with self.timings.section("preprocess", device=not ahead):
                encoded = self.template.encode_second(second, start=0)
            video = None
            if encoded.pixel_values_videos is not None and self.vision_ahead:
                with self.timings.section("vision", device=not ahead):
                    video = self._vision(encoded.pixel_values_videos, encoded.video_grid_thw)
        ready = None
        if side is not None:
            ready = torch.cuda.Event()
            ready.record(side)
            main = torch.cuda.current_stream(self.device)
            for t in _tensors([encoded.pixel_values_videos, video]):
                if t.is_cuda:
                    t.record_stream(main)  # used and freed on the main stream: not reused before it is done
        self.prepared = Prepared(second, encoded, video, ready)
        return self.prepared

    def step(self, second: Second, reply: str | None = None, while_decoding: Callable[[], None] | None = None) -> dict:
        """One second: evict, feed its frames, generate its commentary. `reply` (words, "" = silence) teacher-forces
        the reply as training lays it out (`reply_text`), for evaluation and the parity tests. `while_decoding` runs
        once the reply's first decode steps are queued (after the feed when forced, or on the reference path)."""
        if self.cache is None:
            self.start()
        t0 = time.perf_counter()
        before = self.timings.snapshot()
        self.second_index += 1
        prepared = self.prepared if self.prepared is not None and self.prepared.second is second else None
        self.prepared = None
        self.evict(incoming=self.budget["per_second"])
        if prepared is None:
            prepared = self.prepare(second)
        elif prepared.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(prepared.ready)
        self.feed(prepared.encoded.at(self.cache.next_position), USER, self.second_index, video=prepared.video)
        if reply is None:
            ids = self.generate(REPLY, self.config.max_new_tokens, self.config.min_new_tokens,
                                while_decoding=while_decoding)
        else:
            if while_decoding is not None:
                while_decoding()
            with self.timings.section("preprocess"):
                forced = self.template.encode_reply(reply_text(reply), start=self.cache.next_position)
            self.feed(forced, REPLY, self.second_index)
            ids = forced.input_ids.tolist()
        self.current_time = float(second.end)
        words = self.words(ids)
        return {"type": "segment", "start": float(second.start), "end": float(second.end), "text": words,
                "silent": not words, "tokens": len(ids), "frames": len(second.frames),
                "latency": time.perf_counter() - t0,
                "timings": Timings.diff(self.timings.snapshot(), before), "cache_tokens": self.cache.num_tokens,
                "next_position": self.cache.next_position}

    def ask(self, question: str) -> dict:
        """An interactive question, inserted as a user turn at the current second; returns the answer."""
        if self.cache is None:
            self.start()
        question = " ".join(question.split())
        with self.timings.section("preprocess"):
            enc = self.template.encode_user_text(question, start=0)
        need = len(enc) + self.config.max_answer_tokens + 1 + len(self.template.turn_end_ids)
        self.evict(incoming=need, new_second=False)
        if self.cache.num_tokens + need > self.config.max_cache_tokens:
            raise UserError(f"question too long for the cache budget ({len(enc)} tokens)")
        second = max(self.second_index, 0)
        self.feed(enc.at(self.cache.next_position), QUESTION, second)
        ids = self.generate(ANSWER, self.config.max_answer_tokens, 0, second=second)
        return {"type": "answer", "time": self.current_time, "question": question, "text": self.words(ids)}

    def evict(self, incoming: int = 0, new_second: bool = True) -> int:
        with self.timings.section("eviction"):
            return self.cache.apply(self.policy.plan(self.cache, incoming, new_second))

    def feed(self, enc: Encoded, kind: str, second: int | None, all_logits: bool = False, video=None) -> torch.Tensor:
        """Append an encoded piece (positions must start at the cache's next position); returns its logits. The
        forward writes the cache's unwritten tail (the last reply's closing tokens) first, in the same pass.
        `video`: the piece's vision tower output, computed ahead (`prepare`); else the forward runs the tower."""
        start = int(enc.position_ids.min())
        if start != self.cache.next_position:
            raise ValueError(f"piece encoded at position {start}, cache continues at {self.cache.next_position}")
        tail = self.cache.take_unwritten()
        self.cache.add_segment(kind, enc.input_ids.tolist(), start, enc.next_position, second,
                               has_vision=enc.pixel_values_videos is not None)
        with self._timed_forward("prefill"):
            return self._forward(enc, all_logits, tail, video)

    def generate(self, kind: str, max_new: int, min_new: int = 0, second: int | None = None,
                 while_decoding: Callable[[], None] | None = None) -> list[int]:
        """Decode after the last fed piece (`self._last_logits`) into a new segment, on the slot decoder (fast path)
        or one eager forward a token (reference). The reply's tail is left to the next forward (cache.py, "Unwritten
        tail"). `while_decoding` runs once the first steps are queued; its host time is not booked as decode."""
        second = self.second_index if second is None else second
        pos = self.cache.next_position
        self.cache.add_segment(kind, [], pos, pos, second)
        closing = [self.im_end_id] + list(self.template.turn_end_ids)
        slots = self._slot_decoder(max_new)
        spent = [0.0]

        def meanwhile():
            if while_decoding is not None:
                t0 = time.perf_counter()
                while_decoding()
                spent[0] += time.perf_counter() - t0

        with self.timings.section("decode"):
            context = to_device(self.cache.ids_tensor(), self.device)
            if slots is not None:
                slots.load(self.cache, context)
                generated, fed = slots.generate(self._last_logits, pos, max_new, min_new, while_waiting=meanwhile)
                slots.store(self.cache)
                self.cache.extend_last((generated + closing)[:fed])
            else:
                meanwhile()
                generated, fed = self._generate_on_cache(context, max_new, min_new)
            self.cache.extend_last((generated + closing)[fed:], written=False)
        if not self.timings.cuda:  # host time: while_decoding's own sections booked it (on CUDA it overlaps)
            self.timings.add("decode", -spent[0])
        self.tokens_generated += len(generated)
        return generated + closing

    def _generate_on_cache(self, context: torch.Tensor, max_new: int, min_new: int) -> tuple[list[int], int]:
        """Sample up to `max_new` tokens, feeding each but the last; returns (tokens before <|im_end|>, how many
        of them were fed)."""
        logits = self._last_logits
        generated: list[int] = []
        for step in range(max_new):
            token = self._sample(logits, context, len(generated), min_new)
            if token == self.im_end_id:
                return generated, len(generated)
            generated.append(token)
            context = torch.cat([context, context.new_tensor([token])])
            if step < max_new - 1:  # one decode forward (after a `feed`: no unwritten tail is pending)
                pos = self.cache.next_position
                self.cache.extend_last([token])
                logits = self._run(torch.tensor([token]), torch.tensor([[pos]] * 3), None, None, False)[-1]
        return generated, max(0, len(generated) - 1)

    def _slot_decoder(self, max_new: int) -> SlotDecoder | None:
        """The fast path's fixed-buffer decoder, sized for the cache budget; None on the reference path."""
        if not self.plan.fast:
            return None
        longest = max(self.config.max_new_tokens, self.config.max_answer_tokens)  # the closing tokens are not fed
        capacity = self.budget["bound"] + longest + 8
        if self.slots is None or self.slots.capacity < capacity:
            cfg, text = self.config, self.model.model.language_model.config
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            param = next(self.model.parameters())
            banks = self.cache.make_banks(text.num_hidden_layers, text.num_key_value_heads, head_dim, capacity,
                                          param.dtype, param.device)
            self.slots = self.slot_decoder_class(
                self.model, banks, use_graph=self.plan.cuda_graph, im_end_id=self.im_end_id, max_steps=longest,
                temperature=cfg.temperature, repetition_penalty=cfg.repetition_penalty, generator=self.generator,
                compile=self.plan.compiled)
        return self.slots

    def words(self, ids: list[int]) -> str:
        """The commentary in a reply: decoded, without special tokens or the trailing silence marker."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\n").removesuffix(SILENCE).strip()
        return "" if text == SILENCE.strip() else text

    def _forward(self, enc: Encoded, all_logits: bool = False,
                 tail: tuple[list[int], list[int]] = ([], []), video=None) -> torch.Tensor:
        """The piece's forward, with the cache's unwritten `tail` (ids, positions) in front; the piece's logits."""
        ids, positions = enc.input_ids, enc.position_ids
        if tail[0] and enc.pixel_values_videos is not None and self._placeholder_ids.intersection(tail[0]):
            # a sampled vision placeholder id (an untrained model can emit one) must not be taken for one of the
            # piece's frames: the tail is written by a forward of its own
            self._run(torch.tensor(tail[0], dtype=ids.dtype),
                      torch.tensor(tail[1], dtype=positions.dtype).expand(3, -1), None, None, all_logits=False)
            tail = ([], [])
        if tail[0]:
            ids = torch.cat([torch.tensor(tail[0], dtype=ids.dtype), ids])
            positions = torch.cat([torch.tensor(tail[1], dtype=positions.dtype).expand(3, -1), positions], dim=1)
        logits = self._run(ids, positions, enc.pixel_values_videos, enc.video_grid_thw, all_logits, video)
        return logits[len(tail[0]):] if all_logits else logits

    def _vision_warm_up(self) -> None:
        """One forward of the tower on random frames shaped as a stream second's (its temporal patches at `fps`): the
        compiled blocks' graph, dynamic in the patch count, then serves every frame size. The frame is sized so that
        its patch count equals none of the tower's dimensions: Dynamo would make an equal count the same symbol as
        that dimension (duck sizing) and specialise it, and the first real frame size would compile again."""
        visual = self.model.model.visual
        c, m = visual.config, visual.spatial_merge_size
        t = math.ceil(max(1, math.ceil(self.config.fps)) / c.temporal_patch_size)  # a second's frames, padded
        head = c.hidden_size // c.num_heads
        dims = {v for v in c.to_dict().values() if isinstance(v, int)} | {head, head // 2, c.in_channels *
                                                                           c.temporal_patch_size * c.patch_size ** 2}
        width = next(k for k in range(3, 1000) if not {t * 2 * k * m * m, 2 * k * m * m} & dims)
        grid = torch.tensor([[t, 2 * m, width * m]])
        pixels = torch.randn(int(grid.prod()), c.in_channels * c.temporal_patch_size * c.patch_size ** 2,
                             dtype=next(visual.parameters()).dtype)
        self._vision(pixels, grid)
        self.vision_warm = True

    def _tracing(self):
        """`tracing_settings` where the vision blocks are compiled (the compiled plan), else nothing."""
        return tracing_settings() if self.plan is not None and self.plan.compiled else nullcontext()

    @torch.inference_mode()
    def _vision(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor):
        """The vision tower's output for a piece's frames (`get_video_features`); the grid stays on the CPU where its
        tensors are precomputed, so nothing waits for the device."""
        grid = video_grid_thw if self.vision_grids.supported else video_grid_thw.to(self.device)
        with self.vision_grids.precomputed(video_grid_thw), self._tracing():
            return self.model.model.get_video_features(pixel_values_videos.to(self.device), grid, return_dict=True)

    @torch.inference_mode()
    def _run(self, input_ids, positions, pixel_values_videos, video_grid_thw, all_logits: bool,
             video=None) -> torch.Tensor:
        if self.text_step is not None:
            return self._run_text_step(input_ids, positions, pixel_values_videos, video_grid_thw, all_logits, video)
        kwargs = {}
        if video is not None:
            kwargs = {"mm_encoder_outputs": {"video": video}}
            video_grid_thw = None  # nothing left for the tower to do
        elif pixel_values_videos is not None:
            kwargs = {"pixel_values_videos": pixel_values_videos.to(self.device),
                      "video_grid_thw": video_grid_thw.to(self.device)}
        with self.vision_grids.precomputed(video_grid_thw):
            out = self.model(input_ids=input_ids[None].to(self.device),
                             position_ids=positions[:, None, :].to(self.device),  # (3, 1, L): used as given
                             past_key_values=self.cache, use_cache=True, logits_to_keep=0 if all_logits else 1,
                             **kwargs)
        logits = out.logits[0]
        self._last_logits = logits[-1]
        return logits

    def _run_text_step(self, input_ids, positions, pixel_values_videos, video_grid_thw, all_logits: bool,
                       video=None) -> torch.Tensor:
        """`_run` through our text stack: the vision output goes in at the `<|video_pad|>` tokens and its DeepStack
        features after the first layers, as in transformers, with indices computed on the host (no device wait)."""
        model = self.model
        visual = None
        hidden = model.model.language_model.embed_tokens(to_device(input_ids[None], self.device))
        if video is None and pixel_values_videos is not None:
            video = self._vision(pixel_values_videos, video_grid_thw)
        if video is not None:
            embeds = _joined(video.pooler_output)
            index = (input_ids == model.config.video_token_id).nonzero()[:, 0]
            if index.numel() != embeds.shape[0]:
                raise ValueError(f"{index.numel()} video placeholders for {embeds.shape[0]} vision features")
            index = to_device(index, self.device)
            hidden = hidden.index_copy(1, index, embeds[None].to(hidden.dtype))
            visual = (index, [_joined(f) for f in (video.deepstack_features or [])])
        positions = to_device(positions[:, None, :], self.device)
        room = self.cache.reserve(hidden.shape[1])  # the cache's buffers (it owns them), with room for the piece
        if room is None:
            raise RuntimeError("the text stack needs the cache's banks: start() makes them")
        if visual is not None and self.plan.compiled:  # a second's piece: the compiled layer
            with tracing_settings():
                hidden = self.text_step.stack(hidden, positions, *room, visual)
        else:  # the prefix, text pieces, or not compiled: layer by layer
            hidden = self.text_step(hidden, positions, PieceBuffers(*room), chunk_attention, None, visual)
        self.cache.grow(hidden.shape[1])
        logits = model.lm_head(hidden[0] if all_logits else hidden[0, -1:])
        self._last_logits = logits[-1]
        return logits

    @torch.inference_mode()
    def _sample(self, logits: torch.Tensor, context: torch.Tensor, n_generated: int, min_new: int) -> int:
        scores = logits[None].float().clone()
        if self.repetition is not None:
            scores = self.repetition(context[None], scores)
        if n_generated < min_new:
            scores[:, self.im_end_id] = float("-inf")
        if self.temperature is None:
            return int(scores.argmax(-1))
        scores = self.temperature(context[None], scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    @contextmanager
    def _timed_forward(self, stage: str):
        """Time a forward as `stage`, minus the vision tower's share (hooked and booked as `vision`)."""
        visual = self.model.model.visual
        marks = {}

        def pre(*_):
            marks["vision"] = self.timings.mark()
            marks["range"] = torch.profiler.record_function("stage:vision").__enter__()

        def post(*_):
            marks.pop("range").__exit__(None, None, None)
            start, end = marks.pop("vision"), self.timings.mark()
            self.timings.book("vision", start, end)
            self.timings.book(stage, start, end, sign=-1.0)

        handles = [visual.register_forward_pre_hook(pre), visual.register_forward_hook(post)]
        start = self.timings.mark()
        try:
            with torch.profiler.record_function(f"stage:{stage}"):  # includes the vision range
                yield
        finally:
            for h in handles:
                h.remove()
            self.timings.book(stage, start, self.timings.mark())

    def stats(self) -> dict:
        return {"timings": self.timings.snapshot(), "tokens_generated": self.tokens_generated,
                "cache": self.cache.summary() if self.cache is not None else None, "budget": self.budget}


def run_stream(model, processor, video_path, config: StreamingConfig | dict | None = None, start: float = 0.0,
               end: float | None = None, on_segment=None, engine_class: type[StreamingEngine] | None = None,
               plan: Plan | None = None) -> list[dict]:
    """Stream a video file through a fresh engine; one segment per second. `engine_class`: a subclass (the eval
    callback's lock-step engine under ZeRO-3); `plan`: default the engine's choice."""
    from streaming_vlm.inference.frames import VideoFrameSource

    engine = (engine_class or StreamingEngine)(model, processor, config, plan=plan)
    source = VideoFrameSource(video_path, engine.config.fps, start=start, end=end)
    engine.start()
    segments = []
    for segment in engine.stream(source):
        segments.append(segment)
        if on_segment is not None:
            on_segment(segment)
    return segments
