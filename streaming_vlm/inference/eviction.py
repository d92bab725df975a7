"""What the streaming cache forgets, and when: the StreamingVLM policy (REFERENCE §3), as a plan over segments.

Before each second (and each interactive question) the engine asks for a `{segment index: Keep}` plan and hands it
to `StreamingCache.apply`; the policy never touches tensors, so it can be tested and replaced on its own.
1. vision window: with the new second the cache holds the last `window_size` seconds; an older second loses its USER
   block (time text + vision + generation prompt) and any QUESTION block;
2. fold: its REPLY / ANSWER, now right after the previous-text block, joins it (ids and K/V, no recompute), minus
   its closing `" ..." <|im_end|> \\n` tokens, so silent seconds leave nothing behind;
3. text window: the previous-text block keeps its first `text_sink` and last `text_sliding_window` tokens;
4. budget: if the cache plus `incoming` tokens would exceed `max_cache_tokens`, more of the oldest seconds go.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming_vlm.inference.cache import ANSWER, PREVIOUS, QUESTION, REPLY, USER, Keep, Segment, StreamingCache


@dataclass
class StreamingPolicy:
    window_size: int = 16  # seconds of vision kept
    text_sink: int = 512  # head tokens of the previous-text block kept
    text_sliding_window: int = 512  # tail tokens of the previous-text block kept
    max_cache_tokens: int | None = None  # hard cap on cached tokens, None = no cap beyond the windows
    fold_strip: tuple[tuple[int, ...], ...] = ()  # token suffixes peeled off a reply when it folds, in order

    def plan(self, cache: StreamingCache, incoming: int = 0, new_second: bool = True) -> dict[int, Keep]:
        """The plan before a new second (`window_size - 1` older seconds stay) or a question (`new_second=False`);
        `incoming` bounds the tokens about to be added."""
        segments = cache.segments
        plan: dict[int, Keep] = {}
        seconds = cache.seconds()
        keep_seconds = self.window_size - 1 if new_second else self.window_size
        evict = set(seconds[:max(0, len(seconds) - keep_seconds)])
        evict |= self._over_budget(segments, seconds, evict, incoming)
        for idx, seg in enumerate(segments):
            if seg.second in evict:
                if seg.kind in (USER, QUESTION):
                    plan[idx] = Keep(seg.kind, [])
                elif seg.kind in (REPLY, ANSWER):
                    plan[idx] = Keep(PREVIOUS, [(0, self.words_length(seg.ids))])
        self._trim_previous(segments, plan)
        return plan

    def words_length(self, ids: list[int]) -> int:
        """How many leading tokens of a reply are words: peel the closing suffixes (`fold_strip`) off the end."""
        n = len(ids)
        for suffix in self.fold_strip:
            k = len(suffix)
            if k and n >= k and tuple(ids[n - k:n]) == tuple(suffix):
                n -= k
        return n

    def projected_tokens(self, segments: list[Segment], evict: set[int]) -> int:
        """Cache size after dropping the seconds in `evict`, folding their words and trimming the text block."""
        previous = other = 0
        for g in segments:
            if g.second in evict and g.kind in (USER, QUESTION):
                continue
            if g.kind == PREVIOUS:
                previous += len(g)
            elif g.second in evict and g.kind in (REPLY, ANSWER):
                previous += self.words_length(g.ids)
            else:
                other += len(g)
        return other + min(previous, self.text_sink + self.text_sliding_window)

    def _over_budget(self, segments: list[Segment], seconds: list[int], evict: set[int], incoming: int) -> set[int]:
        """Oldest seconds to drop (beyond the window ones) so the cache plus `incoming` fits `max_cache_tokens`."""
        extra: set[int] = set()
        if self.max_cache_tokens is None:
            return extra
        for s in seconds:
            if s in evict:
                continue
            if self.projected_tokens(segments, evict | extra) + incoming <= self.max_cache_tokens:
                break
            extra.add(s)
        return extra

    def _trim_previous(self, segments: list[Segment], plan: dict[int, Keep]) -> None:
        """Keep the head `text_sink` and tail `text_sliding_window` tokens of the previous-text block."""
        members = []  # (segment index, kept ranges) in cache order, after the fold
        for idx, seg in enumerate(segments):
            keep = plan.get(idx, Keep(seg.kind, [(0, len(seg))]))
            if keep.kind == PREVIOUS and keep.ranges:
                members.append((idx, keep))
        total = sum(b - a for _, keep in members for a, b in keep.ranges)
        if total <= self.text_sink + self.text_sliding_window:
            return
        cut_from, cut_to = self.text_sink, total - self.text_sliding_window  # block-relative token indices
        pos = 0
        for idx, keep in members:
            new_ranges = []
            for a, b in keep.ranges:
                lo, hi = pos, pos + (b - a)  # this range's tokens in block coordinates
                if hi <= cut_from or lo >= cut_to:
                    new_ranges.append((a, b))
                else:
                    if lo < cut_from:
                        new_ranges.append((a, a + cut_from - lo))
                    if hi > cut_to:
                        new_ranges.append((b - (hi - cut_to), b))
                pos = hi
            plan[idx] = Keep(PREVIOUS, new_ranges)


def cache_bound(policy: StreamingPolicy, fixed_tokens: int, per_second_max: int) -> int:
    """Most tokens the cache can hold under `policy`: fixed turns, the text block, `window_size` seconds."""
    return fixed_tokens + policy.text_sink + policy.text_sliding_window + policy.window_size * per_second_max
