"""`check_cache(cache)`: a StreamingCache's segment list describes exactly the tokens its layers hold."""

from __future__ import annotations


def check_cache(cache) -> None:
    physical = cache.get_seq_length()
    assert physical + len(cache.unwritten) == cache.num_tokens, (
        f"cache holds {physical} tokens + {len(cache.unwritten)} unwritten, segments describe {cache.num_tokens}")
    assert not cache.unwritten or cache.ids()[-len(cache.unwritten):] == cache.unwritten, \
        "the unwritten tokens are not the sequence's last"
    for a, b in zip(cache.segments, cache.segments[1:]):
        assert cache.pos_mode != "contiguous" or a.pos_end == b.pos_start, \
            f"positions not contiguous between {a.kind} and {b.kind}"
