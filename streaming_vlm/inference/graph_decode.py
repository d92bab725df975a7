"""`SlotDecoder`: the fast path's decoding, one token a step over fixed-size K/V buffers, replayed as a CUDA graph.

A CUDA graph (one launch for a step's kernels) needs fixed shapes and addresses: the decoder steps over the cache's
two banks (`StreamingCache.make_banks`: `capacity` slots + a scratch slot), one graph captured over each:

    load(cache, context)   pick the bank holding the cache's N tokens (else an error), close the slots from N on;
                           `context` (the cache's ids) is what the repetition penalty sees
    generate(logits, p, …) each step samples ON THE DEVICE (repetition penalty, the min-new-tokens ban on <|im_end|>,
                           temperature as Gumbel-max over noise drawn once a reply), writes its K/V at slot N+i, opens
                           that slot in the additive mask and computes the next logits at position p+i. Steps run in
                           chunks; the host reads a chunk's tokens once and stops at <|im_end|>, closing the slots of
                           steps run past it. The last token at `max_new` is sampled, not fed.
    store(cache)           the decoded tokens (slots [N, filled)) join the cache's layers, in place

Gumbel-max samples the host sampler's distribution with another random stream (greedy decoding is identical). The
step is `text_step.TextStep` with `slot_attention` over all `capacity` slots; `use_graph=False` (always off CUDA)
runs it eagerly, `compile=True` compiles it before capture, and `prepare()` does both before the stream.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from streaming_vlm.model.text_step import text_step_for


def slot_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs):
    """(B, Hq, q, D) queries over (B, Hkv, C, D) slots with an additive (B|1, 1, q, C) mask: grouped-query SDPA.
    Returns (B, q, Hq, D), as transformers' attention functions do."""
    mask = None if attention_mask is None else attention_mask[..., -key.shape[-2]:].to(query.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def first_argmax(scores: torch.Tensor, rows: int = 128) -> torch.Tensor:
    """`scores.argmax(-1, keepdim=True)` of a 1-D `scores` in two stages (per block of `rows`, then across), so the
    vocabulary-wide reduction runs in parallel blocks when compiled. Ties go to the first index, as argmax."""
    if scores.numel() % rows:
        return scores.argmax(-1, keepdim=True)
    blocks = scores.view(rows, -1)
    best, col = blocks.max(-1)
    row = best.argmax(-1, keepdim=True)
    return row * blocks.shape[1] + col.index_select(0, row)


class SlotBank:
    """One bank's (keys, values) per layer; `update(k, v, layer)` (as `TextStep` calls it) writes at the shared slot."""

    def __init__(self, layers, slot: torch.Tensor):
        self.layers, self.slot = list(layers), slot

    def update(self, key_states, value_states, layer: int):
        keys, values = self.layers[layer]
        keys.index_copy_(2, self.slot, key_states)
        values.index_copy_(2, self.slot, value_states)
        return keys, values


class SlotDecoder:
    """An on-device sampler stepped over the cache's banks, as one CUDA graph per token (eagerly off CUDA)."""

    def __init__(self, model, banks, use_graph: bool, *, im_end_id: int, max_steps: int,
                 temperature: float = 0.0, repetition_penalty: float = 1.0, generator: torch.Generator | None = None,
                 chunk: int = 4, compile: bool = False):
        lm = model.model.language_model
        param = next(model.parameters())
        self.model, self.capacity = model, banks[0][0][0].shape[-2] - 1  # (the last slot is the scratch slot)
        self.device, self.dtype = param.device, param.dtype
        self.use_graph = bool(use_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        dev = self.device
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        self.banks = [SlotBank(bank, self.slot) for bank in banks]
        self.graphs: list[torch.cuda.CUDAGraph | None] = [None, None]
        self.active = 0  # the bank the next steps run on
        self.neg = torch.finfo(self.dtype).min
        self.mask = torch.full((1, 1, 1, self.capacity + 1), self.neg, dtype=self.dtype, device=dev)
        self.input_ids = torch.zeros((1, 1), dtype=torch.long, device=dev)
        self.positions = torch.zeros((3, 1, 1), dtype=torch.long, device=dev)
        # the sampler's state, all on the device so a step needs nothing from the host
        vocab = model.lm_head.weight.shape[0]
        self.im_end_id, self.max_steps, self.chunk = int(im_end_id), int(max_steps), max(1, int(chunk))
        self.temperature, self.penalty = float(temperature), float(repetition_penalty)
        self.generator = generator
        self.scores = torch.zeros(vocab, dtype=torch.float32, device=dev)  # logits the next token is sampled from
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=dev)  # tokens the repetition penalty applies to
        self.im_end_mask = torch.zeros(vocab, dtype=torch.bool, device=dev)
        self.im_end_mask[self.im_end_id] = True
        self.noise = (torch.zeros(self.max_steps, vocab, dtype=torch.float32, device=dev)
                      if self.temperature > 0 else None)
        self.tokens = torch.zeros(self.max_steps, dtype=torch.long, device=dev)
        self.step_index = torch.zeros(1, dtype=torch.long, device=dev)  # i: the step about to run
        self.first_slot = torch.zeros(1, dtype=torch.long, device=dev)  # N
        self.first_position = torch.zeros(1, dtype=torch.long, device=dev)  # p
        self.min_new = torch.zeros(1, dtype=torch.long, device=dev)
        self.text_step = text_step_for(lm)  # ours, with fused q|k|v and gate|up products (model/text_step.py)
        if self.text_step is None:
            raise ValueError("the slot decoder runs our text stack: a Qwen3-VL model nothing trains")
        # compiled: the step's small kernels fused; a new decoder of the same shapes reuses it (dynamo, tested)
        self.compiled = bool(compile)
        self._step_fn = torch.compile(self._step, dynamic=False) if self.compiled else self._step
        self.base = 0  # N: where the loaded cache ends
        self.filled = 0  # slots holding real tokens

    @property
    def graph(self) -> torch.cuda.CUDAGraph | None:
        return self.graphs[self.active]

    def _bank_holding(self, cache) -> int | None:
        """The bank every layer of `cache` lives in, if any."""
        for b, bank in enumerate(self.banks):
            if len(cache.layers) == len(bank.layers) and all(
                    src.keys.data_ptr() == keys.data_ptr() and src.values.data_ptr() == values.data_ptr()
                    for src, (keys, values) in zip(cache.layers, bank.layers)):
                return b
        return None

    def _sample(self) -> torch.Tensor:
        """The next token (1,) from `scores`, as the engine's host sampler would pick it (Gumbel-max for T > 0)."""
        i = self.step_index
        scores = self.scores
        if self.penalty != 1.0:  # transformers' RepetitionPenaltyLogitsProcessor over the seen tokens
            scores = torch.where(self.seen, torch.where(scores < 0, scores * self.penalty, scores / self.penalty),
                                 scores)
        scores = scores.masked_fill(self.im_end_mask & (i < self.min_new), float("-inf"))
        if self.noise is not None:
            u = self.noise.index_select(0, i)[0].clamp(min=1e-20)
            scores = scores / self.temperature - torch.log(-torch.log(u))
        return first_argmax(scores)

    def _forward(self, kv: SlotBank) -> torch.Tensor:
        hidden = self.text_step(self.model.model.language_model.embed_tokens(self.input_ids), self.positions,
                                kv, slot_attention, self.mask)
        return self.model.lm_head(hidden[:, -1])[0]

    def _call_step(self) -> None:
        """Run the step (eager or compiled) on the active bank."""
        self._step_fn(self.banks[self.active])  # the bank as an argument: one compiled step serves both (tested)

    def _step(self, kv: SlotBank) -> None:
        """Sample the next token, feed it at slot N+i / position p+i, leave the next scores."""
        i = self.step_index
        token = self._sample()
        self.tokens.index_copy_(0, i.clamp(max=self.max_steps - 1), token)
        self.seen.index_fill_(0, token, True)
        self.input_ids.copy_(token.view(1, 1))
        slot = self.first_slot + i
        self.slot.copy_(slot)
        self.positions.copy_((self.first_position + i).view(1, 1, 1).expand(3, 1, 1))
        self.mask.index_fill_(-1, slot, 0)
        self.scores.copy_(self._forward(kv).float())
        self.step_index.add_(1)

    @contextmanager
    def _undone(self):
        """Steps run inside leave the sampler state and mask as they were and write at the scratch slot."""
        state = (self.scores, self.seen, self.tokens, self.step_index, self.mask, self.first_slot)
        saved = [t.clone() for t in state]
        self.first_slot.fill_(self.capacity)
        try:
            yield
        finally:
            for buf, old in zip(state, saved):
                buf.copy_(old)

    def _capture(self) -> None:
        """Capture the active bank's graph, after two real warm-up steps (at the scratch slot)."""
        with self._undone():
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: allocator pools, lazily built or compiled kernels, outside the graph
                    self.step_index.zero_()
                    self._call_step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._call_step()
            self.graphs[self.active] = graph

    @torch.inference_mode()
    def prepare(self) -> None:
        """Compile and capture the step for both banks now, before the stream, not in its first reply."""
        if self.use_graph:
            active = self.active
            for b in range(len(self.banks)):
                self.active = b
                if self.graph is None:
                    self._capture()
            self.active = active
        elif self.compiled:
            with self._undone():
                self._call_step()

    def _run_steps(self, n: int) -> None:
        """n steps, queued with no host sync (one graph launch each on CUDA)."""
        for _ in range(n):
            if not self.use_graph:
                self._call_step()
                continue
            if self.graph is None:
                self._capture()
            self.graph.replay()

    @torch.inference_mode()
    def load(self, cache, context: torch.Tensor | None = None) -> None:
        """Decode on the bank holding the cache's N tokens, close every later slot, mark `context` as seen."""
        n = cache.get_seq_length()
        bank = self._bank_holding(cache)
        if bank is None:
            raise ValueError(f"the streaming cache ({n} tokens) does not live in the decoder's banks")
        self.active = bank
        self.mask.fill_(self.neg)
        self.mask[..., :n] = 0
        self.seen.zero_()
        if context is not None and context.numel():
            self.seen.index_fill_(0, context.to(self.device), True)
        self.base = self.filled = n

    @torch.inference_mode()
    def generate(self, logits: torch.Tensor, position: int, max_new: int, min_new: int,
                 while_waiting=None) -> tuple[list[int], int]:
        """Decode up to `max_new` tokens after `logits`, the first at `position`, each fed at its slot but the last
        at `max_new` (only sampled). Returns (the tokens before <|im_end|>, how many of them + <|im_end|> were fed).
        Call `load` first. `while_waiting` runs once, after the first chunk is queued, before the host waits."""
        if max_new > self.max_steps or self.base + max_new > self.capacity:
            raise ValueError(f"the cache ({self.base} tokens) and a reply of {max_new} exceed the slot decoder's "
                             f"{self.capacity} slots, {self.max_steps} steps (sized from the cache budget)")
        self.scores.copy_(logits.float())
        self.step_index.zero_()
        self.first_slot.fill_(self.base)
        self.first_position.fill_(int(position))
        self.min_new.fill_(int(min_new))
        if self.noise is not None:
            self.noise[:max_new].uniform_(generator=self.generator)
        generated: list[int] = []
        done, stopped = 0, False
        fed_steps = max(0, max_new - 1)
        while done < fed_steps and not stopped:
            n = min(fed_steps - done, max(self.chunk, min_new - done))  # no stop can come before min_new
            self._run_steps(n)
            if while_waiting is not None:
                while_waiting()
                while_waiting = None
            for token in self.tokens[done:done + n].tolist():  # the one host sync of the chunk
                done += 1
                if token == self.im_end_id:
                    stopped = True
                    break
                generated.append(token)
        if while_waiting is not None:  # no step was queued (max_new <= 1)
            while_waiting()
        fed = len(generated) + (1 if stopped else 0)  # <|im_end|> sampled: already fed at its slot
        if stopped:
            self.mask[..., self.base + fed:] = self.neg  # undo the steps replayed past the stop
            self.step_index.fill_(fed)
        elif max_new > 0:  # the last token: sampled as the step would, not fed
            token = int(self._sample())
            if token != self.im_end_id:
                generated.append(token)
        self.filled = self.base + fed
        return generated, fed

    @torch.inference_mode()
    def store(self, cache) -> int:
        """Take the decoded tokens' K/V (slots [N, filled), written in the cache's bank) into its layers."""
        a, b = self.base, self.filled
        if b > a:
            cache.grow(b - a)
        self.base = b
        return b - a
