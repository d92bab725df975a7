"""`TracingEngine`: the streaming engine that also records the scores every decoded token was sampled from, so
tests and benches can compare two ways of running (reference vs fast path, eager vs compiled, CUDA graph) logit
by logit. Built on the engine's extension points (its sampler and `slot_decoder_class`); the package has no trace.

    engine = TracingEngine(model, processor, config, plan=...)
    engine.start(); engine.step(second)
    engine.score_trace  # [(vocab,) float32 tensor] per sampled token, in order
"""

from __future__ import annotations

import torch

from streaming_vlm.inference.engine import StreamingEngine
from streaming_vlm.inference.graph_decode import SlotDecoder


class TracingSlotDecoder(SlotDecoder):
    """Records `scores` before every sampled step; the steps replayed past <|im_end|> are dropped again."""

    trace: list[torch.Tensor] | None = None

    def _run_steps(self, n: int) -> None:
        for _ in range(n):
            if self.trace is not None:
                self.trace.append(self.scores.clone())
            super()._run_steps(1)

    def generate(self, logits, position, max_new, min_new, while_waiting=None):
        start = len(self.trace) if self.trace is not None else 0
        generated, fed = super().generate(logits, position, max_new, min_new, while_waiting)
        if self.trace is not None:
            del self.trace[start + fed:]  # every fed token was sampled in a step; later steps ran past the stop
            stopped = fed == len(generated) + 1  # <|im_end|> came in a step
            if not stopped and max_new > 0:  # the last token, sampled from the scores the steps left
                self.trace.append(self.scores.clone())
        return generated, fed


class TracingEngine(StreamingEngine):
    slot_decoder_class = TracingSlotDecoder

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.score_trace: list[torch.Tensor] = []
        self.steps_prepared_ahead = 0  # steps that found their second prepared while the last reply decoded

    def step(self, second, *args, **kwargs):
        self.steps_prepared_ahead += self.prepared is not None and self.prepared.second is second
        return super().step(second, *args, **kwargs)

    @torch.inference_mode()
    def _sample(self, logits, context, n_generated, min_new):
        self.score_trace.append(logits.detach().float().clone())
        return super()._sample(logits, context, n_generated, min_new)

    def _slot_decoder(self, max_new):
        slots = super()._slot_decoder(max_new)
        if slots is not None:
            slots.trace = self.score_trace
        return slots
