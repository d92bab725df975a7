"""`StreamingCache`: a transformers KV cache that knows which tokens are which, and can drop some of them.

A `DynamicCache` subclass (mask sizes, query offsets and `update` stay transformers'), holding keys already rotated,
plus **segments** in physical token order, each with its ids and position span [pos_start, pos_end):

    SINK      system turn                         never evicted
    PREVIOUS  earlier commentary                  head `text_sink` + tail `text_sliding_window` tokens kept
    QUERY     the user's standing query, if any   never evicted
    USER i    second i: Time=…, its vision, and the `<|im_start|>assistant\\n` generation prompt
    REPLY i   what the model said in second i (words, " ...", <|im_end|>, "\\n")
    QUESTION i / ANSWER i   an interactive question typed during second i, and the answer

The one mutation is `apply(plan)` (eviction.py's plan): which sub-ranges of each segment survive, as which kind. In
`contiguous` mode each survivor moves down by the position span removed before it and its key is re-rotated once
(exact: the shift is uniform over t/h/w), so positions stay bounded; in `native` mode (the ablation) they grow.

**Buffers.** A layer is a `SpareLayer`, written in place into buffers with `spare_tokens` of room. The cache owns
two banks (`make_banks`) of fixed per-layer buffers that evictions compact into in turn; the slot decoder captures a
CUDA graph over each, and a stream's next cache takes them over (`banks=`).

**Unwritten tail.** A reply's last tokens (the last sampled word, `<|im_end|>`, `\\n`) need no logits: they join the
segments at once (`extend_last(..., written=False)`) and the next forward writes their K/V before its piece
(`take_unwritten`). `apply` keeps or drops them like any other.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from streaming_vlm.inference.config import POS_MODES
from streaming_vlm.inference.rotation_kernel import rotate_in_place_cuda
from streaming_vlm.inference.transfer import to_device
from streaming_vlm.model.mrope import apply_rotation, rotation_table

SINK, PREVIOUS, QUERY, USER, REPLY, QUESTION, ANSWER = (
    "sink", "previous", "query", "user", "reply", "question", "answer")


@dataclass
class Segment:
    kind: str
    ids: list[int]
    pos_start: int
    pos_end: int  # exclusive: the first position after this segment
    second: int | None = None  # which stream second it belongs to (None for sink/previous-prefix/query)
    has_vision: bool = False

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Keep:
    """What survives of one segment: token sub-ranges [(a, b), …] (sorted, disjoint) and its new kind."""

    kind: str
    ranges: list[tuple[int, int]] = field(default_factory=list)


class StreamingCache(DynamicCache):
    def __init__(self, inv_freq: torch.Tensor, pos_mode: str = "contiguous", banks: list | None = None):
        super().__init__()
        if pos_mode not in POS_MODES:
            raise ValueError(f"pos_mode must be one of {POS_MODES}, got {pos_mode!r}")
        self.inv_freq = inv_freq.detach().float().cpu()
        self._inv_freq_on: dict[torch.device, torch.Tensor] = {}
        self.pos_mode = pos_mode
        self.spare_tokens = 0  # room left in each layer's buffers after an eviction or a regrow (SpareLayer)
        self.layer_class_to_replicate = lambda: SpareLayer(self, len(self.layers))
        # [bank][layer] -> (keys, values) of `capacity` slots + one scratch slot (the decoder's, never cached)
        self.banks: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = banks
        self.segments: list[Segment] = []
        self.unwritten: list[int] = []  # the sequence's last tokens, whose K/V the layers do not hold yet
        self.tokens_evicted = 0
        self.rotations = 0  # how many times cached keys were re-rotated (once per eviction that moved tokens)

    @property
    def next_position(self) -> int:
        return self.segments[-1].pos_end if self.segments else 0

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.segments)

    def add_segment(self, kind: str, ids, pos_start: int, pos_end: int, second: int | None = None,
                    has_vision: bool = False) -> Segment:
        if pos_start != self.next_position and self.segments:
            raise ValueError(f"segment starts at position {pos_start}, cache continues at {self.next_position}")
        seg = Segment(kind, [int(i) for i in ids], int(pos_start), int(pos_end), second, has_vision)
        self.segments.append(seg)
        return seg

    def extend_last(self, ids, written: bool = True) -> None:
        """Append text tokens to the newest segment, one position each; `written=False`: see "Unwritten tail"."""
        ids = [int(i) for i in ids]
        if written and ids and self.unwritten:
            raise ValueError("tokens written after unwritten ones: take_unwritten() first")
        seg = self.segments[-1]
        seg.ids.extend(ids)
        seg.pos_end += len(ids)
        if not written:
            self.unwritten.extend(ids)

    def take_unwritten(self) -> tuple[list[int], list[int]]:
        """The unwritten tail (ids, positions) the next forward writes first, cleared; call before `add_segment`."""
        ids, self.unwritten = self.unwritten, []
        positions: list[int] = []
        for seg in reversed(self.segments):  # text segments: one position per token
            if len(positions) >= len(ids):
                break
            if seg.has_vision:
                raise AssertionError("an unwritten token inside a vision segment")
            positions[:0] = range(seg.pos_start, seg.pos_end)[-(len(ids) - len(positions)):]
        return ids, positions

    def ids(self) -> list[int]:
        return list(itertools.chain.from_iterable(s.ids for s in self.segments))

    def ids_tensor(self) -> torch.Tensor:
        """`ids()` as an int64 CPU tensor, built without a Python list (the decoder needs it every reply)."""
        chain = itertools.chain.from_iterable(s.ids for s in self.segments)
        return torch.from_numpy(np.fromiter(chain, dtype=np.int64, count=self.num_tokens))

    def seconds(self) -> list[int]:
        """Stream seconds that still have their vision in the cache, oldest first."""
        return sorted({s.second for s in self.segments if s.kind == USER})

    def apply(self, plan: dict[int, Keep]) -> int:
        """Keep, for each segment index in `plan`, only `Keep.ranges` (others stay whole); returns the tokens removed.
        A vision segment is kept or dropped whole (its positions are a grid, not a line)."""
        new_segments: list[Segment] = []
        kept: list[tuple[int, int, int]] = []  # surviving token ranges: (start, end in cache order, pos shift)
        removed_span = 0
        offset = 0
        for idx, seg in enumerate(self.segments):
            keep = plan.get(idx, Keep(seg.kind, [(0, len(seg))]))
            ranges = [(a, b) for a, b in keep.ranges if b > a]
            if seg.has_vision and ranges and ranges != [(0, len(seg))]:
                raise ValueError(f"a vision segment ({seg.kind} {seg.second}) is kept whole or dropped whole")
            cursor = 0
            for a, b in ranges:
                if not 0 <= cursor <= a < b <= len(seg):
                    raise ValueError(f"bad keep range {(a, b)} for a segment of {len(seg)} tokens")
                removed_span += self._span(seg, cursor, a)
                shift = removed_span if self.pos_mode == "contiguous" else 0
                if seg.has_vision:
                    start, end = seg.pos_start, seg.pos_end
                else:
                    start, end = seg.pos_start + a, seg.pos_start + b
                new_segments.append(Segment(keep.kind, seg.ids[a:b], start - shift, end - shift, seg.second,
                                            seg.has_vision))
                kept.append((offset + a, offset + b, shift))
                cursor = b
            removed_span += self._span(seg, cursor, len(seg))
            offset += len(seg)

        removed = offset - sum(b - a for a, b, _ in kept)
        self.segments = new_segments
        physical = offset - len(self.unwritten)  # tokens from here on are the unwritten tail
        written, unwritten = [], []
        for a, b, s in kept:
            if a < physical:
                written.append((a, min(b, physical), s))
            if b > physical:
                unwritten += self.unwritten[max(a, physical) - physical:b - physical]
        removed_written = physical - sum(b - a for a, b, _ in written)
        self.unwritten = unwritten
        if removed_written:  # (no written token dropped: none moved either, the unwritten tail is last)
            self._gather_and_rotate(written)
        self.tokens_evicted += removed
        return removed

    @staticmethod
    def _span(seg: Segment, a: int, b: int) -> int:
        """Position span of tokens [a, b) of a segment (a dropped vision segment frees its whole span)."""
        if b <= a:
            return 0
        return seg.pos_end - seg.pos_start if seg.has_vision else b - a

    @torch.inference_mode()  # new buffers of the same kind as the forwards' (a compiled forward guards on it)
    def _gather_and_rotate(self, kept: list[tuple[int, int, int]]) -> None:
        """Compact every layer to the `kept` token ranges (start, end, shift); the tokens from the first moved one on
        rotate in one pass a layer, by a per-token (cos, sin) table built once per eviction."""
        index = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b, _ in kept] or [np.zeros(0, np.int64)])
        shifts = np.repeat(np.array([-s for *_, s in kept], np.int64), [b - a for a, b, _ in kept])  # new order
        moved = np.flatnonzero(shifts)
        first = int(moved[0]) if len(moved) else len(shifts)
        keep_index, shifts = torch.from_numpy(index), torch.from_numpy(shifts[first:])
        runs = sum(1 for i, (_, _, s) in enumerate(kept) if s and (i == 0 or kept[i - 1][2] != s))
        index, device, cos, sin = None, None, None, None
        for layer in self.layers:
            if not getattr(layer, "is_initialized", False) or layer.keys is None or layer.keys.numel() == 0:
                continue
            if device != layer.keys.device:  # once per eviction, not per layer
                device = layer.keys.device
                index = to_device(keep_index, device)
                if runs:
                    if device not in self._inv_freq_on:
                        self._inv_freq_on[device] = self.inv_freq.to(device)
                    cos, sin = rotation_table(to_device(shifts, device), self._inv_freq_on[device], device)
            layer.compact(index, first, cos, sin)
        self.rotations += runs

    def reserve(self, count: int) -> tuple[list[torch.Tensor], list[torch.Tensor], int] | None:
        """Every layer's (keys, values) buffers with room for `count` tokens after the n each holds, and n, for a
        forward that writes into them (our text stack; then `grow(count)`). An empty cache with banks takes its
        layers' shapes from them; None where there is neither (transformers' forward fills the cache itself)."""
        if not self.layers and self.banks:
            for keys, _ in self.banks[0]:
                layer = self.layer_class_to_replicate()
                empty = keys[..., :0, :]
                layer.lazy_initialization(empty, empty)
                layer.keys, layer.values = empty, empty
                self.layers.append(layer)
        layers = self.layers
        if not layers or not all(isinstance(layer, SpareLayer) and layer.is_initialized for layer in layers):
            return None
        n = layers[0].get_seq_length()
        if any(layer.get_seq_length() != n for layer in layers):
            raise AssertionError("cache layers hold different token counts")
        rooms = [layer.make_room(count) for layer in layers]
        return [k for k, _ in rooms], [v for _, v in rooms], n

    def grow(self, count: int) -> None:
        """Take in `count` tokens that a forward wrote into every layer's room (see `reserve`)."""
        for layer in self.layers:
            layer.grow(count)

    def make_banks(self, layers: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                   device: torch.device) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Allocate the two banks (see "Banks"): per layer, keys and values of `capacity` slots + one scratch."""
        shape = (1, kv_heads, capacity + 1, head_dim)
        self.banks = [[(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                       for _ in range(layers)] for _ in range(2)]
        return self.banks

    def bank_buffers(self, layer: int, current, like: torch.Tensor, tokens: int):
        """The other bank's pair for `layer` (not `current`), without its scratch slot, if it holds `tokens` tokens
        like `like`; else None (the layer gets buffers of its own)."""
        for bank in self.banks or ():
            keys, values = (buf[..., :-1, :] for buf in bank[layer])
            if current is not None and keys.data_ptr() == current[0].data_ptr():
                continue
            if (keys.shape[-2] >= tokens and keys.shape[:-2] == like.shape[:-2] and keys.shape[-1] == like.shape[-1]
                    and keys.dtype == like.dtype and keys.device == like.device):
                return keys, values
        return None

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for s in self.segments:
            kinds[s.kind] = kinds.get(s.kind, 0) + len(s)
        return {"tokens": self.num_tokens, "unwritten": len(self.unwritten), "next_position": self.next_position,
                "by_kind": kinds, "seconds_in_window": len(self.seconds()), "tokens_evicted": self.tokens_evicted,
                "rotations": self.rotations}


class SpareLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers with room to spare (`cache.spare_tokens`), made when
    an eviction compacts the layer (into the other bank or new buffers) or a piece does not fit."""

    def __init__(self, cache: "StreamingCache", index: int):
        super().__init__()
        self.cache, self.index = cache, index
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def _room(self, total: int) -> bool:
        if self.buffers is None:
            return False
        kbuf = self.buffers[0]
        keys = self.keys  # a view at the buffers' start (an empty view's data_ptr says nothing: compare storages)
        return (kbuf.shape[-2] >= total and keys.untyped_storage().data_ptr() == kbuf.untyped_storage().data_ptr()
                and keys.storage_offset() == kbuf.storage_offset() and keys.stride() == kbuf.stride())

    def _new_buffers(self, like: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        banked = self.cache.bank_buffers(self.index, self.buffers, like, tokens)
        if banked is not None:
            self.buffers = banked
        else:
            shape = (*like.shape[:-2], tokens + self.cache.spare_tokens, like.shape[-1])
            self.buffers = (like.new_empty(shape), like.new_empty(shape))
        return self.buffers

    def grow(self, count: int) -> None:
        """Take in the next `count` tokens, already written into the buffers' room (by the slot decoder)."""
        n = self.get_seq_length()
        if not self._room(n + count):
            raise ValueError(f"{count} tokens past the layer's {n} are not in its buffers")
        kbuf, vbuf = self.buffers
        self.keys, self.values = kbuf[..., :n + count, :], vbuf[..., :n + count, :]

    def make_room(self, add: int, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffers holding this layer's tokens with room for `add` more (new ones, tokens copied, if too small)."""
        n = self.get_seq_length()
        if not self._room(n + add):
            kbuf, vbuf = self._new_buffers(self.keys if like is None else like, n + add)
            if n:
                kbuf[..., :n, :].copy_(self.keys)
                vbuf[..., :n, :].copy_(self.values)
            self.keys, self.values = kbuf[..., :n, :], vbuf[..., :n, :]
        return self.buffers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.get_seq_length()
        kbuf, vbuf = self.make_room(key_states.shape[-2], like=key_states)
        self.keys, self.values = write_after(kbuf, vbuf, n, key_states, value_states)
        return self.keys, self.values

    def compact(self, index: torch.Tensor, first: int, cos: torch.Tensor | None, sin: torch.Tensor | None) -> None:
        """Keep the tokens at `index` in new buffers, keys from `first` on rotated in place by (cos, sin) if given."""
        m = index.numel()
        kbuf, vbuf = self._new_buffers(self.keys, m)
        keys, values = kbuf[..., :m, :], vbuf[..., :m, :]
        torch.index_select(self.keys, -2, index, out=keys)
        torch.index_select(self.values, -2, index, out=values)
        if cos is not None and keys.is_cuda:  # one Triton kernel (rotation_kernel.py)
            rotate_in_place_cuda(keys[..., first:, :], cos, sin)
        elif cos is not None:
            keys[..., first:, :] = apply_rotation(keys[..., first:, :], cos, sin)
        self.keys, self.values = keys, values


def write_after(keys: torch.Tensor, values: torch.Tensor, n: int, key_states: torch.Tensor,
                value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write a piece's K/V into the buffers at [n, n + L) and return the views [0, n + L): the one writer of the
    cache's buffers (a SpareLayer's `update`, and PieceBuffers for our text stack)."""
    end = n + key_states.shape[-2]
    keys[..., n:end, :].copy_(key_states)
    values[..., n:end, :].copy_(value_states)
    return keys[..., :end, :], values[..., :end, :]


class PieceBuffers:
    """The cache's per-layer K/V buffers holding `n` tokens with room for a piece after them (`StreamingCache.reserve`),
    handed to the text stack: `update(k, v, layer)` writes the piece's K/V after the n and returns what it attends over.
    The cache then `grow`s by the piece."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], n: int):
        self.keys, self.values, self.n = keys, values, n

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer: int):
        return write_after(self.keys[layer], self.values[layer], self.n, key_states, value_states)
