"""`SlotDecoder`: one-token decode steps over fixed-size KV buffers, captured once as a CUDA graph.

Eager decoding of a 28-layer model is launch-bound (~1.2K small kernels per token, ~20 ms on an H200 while the
weights take ~1 ms to read). A CUDA graph replays all of them in one launch, but needs every tensor shape and
address fixed. The streaming cache's are not (it grows by a second, then evicts and compacts), so decoding works on
a copy:

    load(cache)     once per reply: the cache's N tokens -> slots [0, N) of per-layer buffers of `capacity` slots
    step(token, p)  write the token's K/V at slot N+i (a device-side index), attend over the buffers with an additive
                    mask that opens slots [0, N+i]; position p on t/h/w alike (text). Returns the next logits.
    store(cache, k) the k decoded tokens' K/V (slots [N, N+k)) appended to the cache's layers

Eviction, prefill and vision stay on the eager path, outside the graph. The step is the model's own text stack
(`model.model.language_model` + `lm_head`, unpatched) called with a `transformers.Cache` whose layers are the
buffers; the explicit 4-D mask is used as given by transformers' mask code. On CPU (or with `use_graph=False`) the
same step runs eagerly: that is what the parity test checks against the dynamic path.

The buffers attend over all `capacity` slots every step (masked), so a step costs the same at any fill level: flat
decode latency across history, at the price of reading a few thousand masked keys. The step's attention is
`slot_attention` (registered with transformers' AttentionInterface, used only inside the step): SDPA with
`enable_gqa`, so each K/V head is read once. transformers' sdpa path repeats K/V per query head first, which over
14K slots costs 6x more (H100, 2B shapes: 185 vs 30 us a layer; plain mat-muls 56 us).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin

SLOT_ATTENTION = "streaming_slot_attention"


def slot_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs):
    """(B, Hq, q, D) queries over (B, Hkv, C, D) slot keys/values with an additive (B|1, 1, q, C) mask: SDPA with
    grouped-query heads (no repeated K/V). Returns (B, q, Hq, D), as transformers' attention functions do."""
    mask = None if attention_mask is None else attention_mask[..., -key.shape[-2]:].to(query.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(SLOT_ATTENTION, slot_attention)


@contextmanager
def attention_implementation(config, name: str):
    """Run the text stack with another registered attention function; restored after (set on the instance, not
    through the setter, which would also rewrite sub-configs)."""
    saved = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = saved


class SlotLayer(CacheLayerMixin):
    """One layer's fixed K/V buffers; `update` writes the new token at the shared device-side slot index."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, slot: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.slot = keys, values, slot
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # buffers are allocated up front
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys.index_copy_(2, self.slot, key_states)
        self.values.index_copy_(2, self.slot, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def get_seq_length(self, *args, **kwargs) -> int:
        return 0  # only read when no positions are given; ours always are

    def get_max_length(self) -> int:
        return self.keys.shape[-2]

    def get_max_cache_shape(self) -> int:  # older name of get_max_length
        return self.keys.shape[-2]


class SlotDecoder:
    def __init__(self, model, capacity: int, use_graph: bool | None = None):
        lm = model.model.language_model
        cfg = lm.config
        param = next(model.parameters())
        self.model, self.capacity = model, int(capacity)
        self.device, self.dtype = param.device, param.dtype
        self.use_graph = (self.device.type == "cuda") if use_graph is None else bool(use_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        shape = (1, cfg.num_key_value_heads, self.capacity, getattr(cfg, "head_dim", None)
                 or cfg.hidden_size // cfg.num_attention_heads)
        dev = self.device
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        self.layers = [SlotLayer(torch.zeros(shape, dtype=self.dtype, device=dev),
                                 torch.zeros(shape, dtype=self.dtype, device=dev), self.slot)
                       for _ in range(cfg.num_hidden_layers)]
        self.kv = Cache(layers=self.layers)
        self.neg = torch.finfo(self.dtype).min
        self.mask = torch.full((1, 1, 1, self.capacity), self.neg, dtype=self.dtype, device=dev)
        self.input_ids = torch.zeros((1, 1), dtype=torch.long, device=dev)
        self.positions = torch.zeros((3, 1, 1), dtype=torch.long, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        self.base = 0  # N: where the loaded cache ends
        self.filled = 0  # slots holding real tokens

    # ---- the step ---------------------------------------------------------------------------------------------
    def _forward(self) -> torch.Tensor:
        lm = self.model.model.language_model
        with attention_implementation(lm.config, SLOT_ATTENTION):
            out = lm(input_ids=self.input_ids, position_ids=self.positions, attention_mask=self.mask,
                     past_key_values=self.kv, use_cache=True)
        return self.model.lm_head(out.last_hidden_state[:, -1])[0]

    def _capture(self) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: allocator pools and lazily built kernels, outside the graph
                self._forward()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward()

    # ---- per reply --------------------------------------------------------------------------------------------
    def fits(self, cache, new_tokens: int) -> bool:
        return cache.get_seq_length() + new_tokens <= self.capacity

    @torch.inference_mode()
    def load(self, cache) -> None:
        """Copy the streaming cache's tokens into slots [0, N) and close every later slot."""
        n = cache.get_seq_length()
        if n > self.capacity:
            raise ValueError(f"cache holds {n} tokens, slot buffers {self.capacity}")
        for src, dst in zip(cache.layers, self.layers):
            dst.keys[:, :, :n].copy_(src.keys)
            dst.values[:, :, :n].copy_(src.values)
        self.mask.fill_(self.neg)
        self.mask[..., :n] = 0
        self.base = self.filled = n

    @torch.inference_mode()
    def step(self, token: int, position: int) -> torch.Tensor:
        """Decode one token at the next slot; returns the logits for the token after it."""
        if self.filled >= self.capacity:
            raise ValueError("slot buffers full")
        self.input_ids.fill_(int(token))
        self.positions.fill_(int(position))
        self.slot.fill_(self.filled)
        self.mask[..., self.filled] = 0
        self.filled += 1
        if not self.use_graph:
            return self._forward()
        if self.graph is None:
            self._capture()  # its warm-up writes this same slot; the replay below rewrites it
        self.graph.replay()
        return self.logits

    @torch.inference_mode()
    def store(self, cache) -> int:
        """Append the decoded tokens' K/V (slots [N, filled)) to the streaming cache's layers."""
        a, b = self.base, self.filled
        if b > a:
            for src, dst in zip(self.layers, cache.layers):
                dst.keys = torch.cat([dst.keys, src.keys[:, :, a:b]], dim=-2)
                dst.values = torch.cat([dst.values, src.values[:, :, a:b]], dim=-2)
        self.base = b
        return b - a
