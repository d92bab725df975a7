"""Bad data: skipped, counted by reason, never silently replaced; too much of it stops the run with one error.

Where a bad item is found:

- at index time (no video decoding): `malformed_json`, `non_utf8`, `malformed_record`, `empty_commentary`,
  `words_outside_span`, `control_token_text` (words that write out a special token such as `<|im_end|>`),
  `missing_video`, `empty_video` (0 bytes) -- the record is dropped before any chunk is built
  and counted in `StreamDataset.index_bad` (and logged once when the dataset is built);
- at `__getitem__` time (decoding): `corrupt_video`, `window_past_end`, and `missing_video`/`empty_video` for files
  that vanished after indexing -- the dataset returns a *marker* (`bad_marker(...)`) instead of a sample.

The collator drops the markers and puts the per-batch counts in the batch (`batch["bad_samples"] = {reason: n}`,
`batch["n_samples"]` = samples asked for, good + bad), so the counts reach the main process even from DataLoader
workers. The trainer feeds every batch to a `BadSampleTracker`, which sums the counts into metrics, logs them, and
raises ONE `UserError` as soon as the bad fraction is over `max_bad_fraction`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Mapping

from streaming_vlm.errors import UserError

log = logging.getLogger(__name__)

MISSING_VIDEO = "missing_video"
EMPTY_VIDEO = "empty_video"  # zero-length file
CORRUPT_VIDEO = "corrupt_video"  # undecodable, or no frames
WINDOW_PAST_END = "window_past_end"
WORDS_OUTSIDE_SPAN = "words_outside_span"
EMPTY_COMMENTARY = "empty_commentary"
MALFORMED_JSON = "malformed_json"
NON_UTF8 = "non_utf8"
MALFORMED_RECORD = "malformed_record"  # valid JSON without the fields a record needs (or unusable values)
CONTROL_TOKEN_TEXT = "control_token_text"  # commentary that writes out one of the tokenizer's special tokens

REASONS = (MISSING_VIDEO, EMPTY_VIDEO, CORRUPT_VIDEO, WINDOW_PAST_END, WORDS_OUTSIDE_SPAN, EMPTY_COMMENTARY,
           MALFORMED_JSON, NON_UTF8, MALFORMED_RECORD, CONTROL_TOKEN_TEXT)

MARKER_KEY = "bad_sample"
_LOG_FIRST = 5  # per reason and process; later ones are only counted


class BadSample(Exception):
    """A record or sample that must be skipped; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def bad_marker(reason: str, index: int, detail: str = "") -> dict[str, Any]:
    """What `StreamDataset.__getitem__` returns for a sample it cannot produce."""
    return {MARKER_KEY: reason, "index": int(index), "detail": detail}


def is_bad(item: Mapping[str, Any]) -> bool:
    return MARKER_KEY in item


_logged: Counter = Counter()


def log_bad(reason: str, where: str, detail: str) -> None:
    """Warn about the first few bad items of each reason (per process), then stay quiet."""
    _logged[reason] += 1
    if _logged[reason] <= _LOG_FIRST:
        more = " (further ones of this kind are counted, not logged)" if _logged[reason] == _LOG_FIRST else ""
        log.warning("skipping bad data [%s] %s: %s%s", reason, where, detail, more)


def format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v) or "none"


def check_fraction(bad: Mapping[str, int], total: int, max_bad_fraction: float, what: str) -> None:
    """Raise the one UserError if sum(bad) / total exceeds max_bad_fraction."""
    n_bad = sum(bad.values())
    if total > 0 and n_bad / total > max_bad_fraction:
        raise UserError(
            f"too much bad data in {what}: {n_bad} of {total} ({100 * n_bad / total:.1f}%) is over "
            f"data.max_bad_fraction={max_bad_fraction:g} ({format_counts(bad)}); fix the data or raise the limit")


CLEAR_MIN_BAD = 3  # bad samples needed before the fraction can be called clearly over the limit early
_Z99 = 2.576


def wilson_lower(bad: int, total: int, z: float = _Z99) -> float:
    """Lower end of the Wilson score interval of the fraction bad/total (0 when nothing was seen)."""
    if total <= 0:
        return 0.0
    p = bad / total
    denom = 1 + z * z / total
    centre = p + z * z / (2 * total)
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, (centre - margin) / denom)


class BadSampleTracker:
    """Main-process sum of the per-batch bad-sample counts; the trainer calls `update(batch)` on every batch.

    `expected_total` (samples the run will ask for, e.g. len(dataset) x epochs) lets the check fire as soon as the
    bad count alone exceeds the allowance of the whole run. Before `min_samples` samples, the running fraction stops
    the run once it is clearly over the limit: at least `CLEAR_MIN_BAD` bad samples and the lower end of the 99%
    Wilson interval of the bad fraction above `max_bad_fraction` (so one early bad sample does not stop a run, but
    a source that is half bad stops after a couple of dozen samples). From `min_samples` on, the plain running
    fraction is checked.
    """

    def __init__(self, max_bad_fraction: float, expected_total: int | None = None, min_samples: int = 50,
                 index_bad: Mapping[str, int] | None = None, index_total: int = 0):
        self.max_bad_fraction = float(max_bad_fraction)
        self.expected_total = expected_total
        self.min_samples = min_samples
        self.counts: Counter = Counter()
        self.seen = 0
        self.index_bad = Counter(index_bad or {})
        self.index_total = index_total

    def update(self, batch: Mapping[str, Any]) -> dict[str, int]:
        """Add one batch's counts (pop them from the batch first or pass the batch as is); returns the batch's."""
        counts = dict(batch.get("bad_samples") or {})
        n = int(batch.get("n_samples", 0))
        self.add(counts, n)
        return counts

    def add(self, counts: Mapping[str, int], n_samples: int) -> None:
        new = {k: int(v) for k, v in counts.items() if v}
        if new:
            log.warning("bad samples in this batch: %s (run total: %s)", format_counts(new),
                        format_counts(self.counts + Counter(new)))
        self.counts.update(new)
        self.seen += int(n_samples)
        self.check()

    def check(self) -> None:
        n_bad = sum(self.counts.values())
        if self.expected_total and n_bad > self.max_bad_fraction * self.expected_total:
            check_fraction(self.counts, self.expected_total, self.max_bad_fraction,
                           f"the training samples (so far, of {self.expected_total} expected)")
        if self.seen >= self.min_samples or (
                n_bad >= CLEAR_MIN_BAD and wilson_lower(n_bad, self.seen) > self.max_bad_fraction):
            check_fraction(self.counts, self.seen, self.max_bad_fraction, "the training samples seen so far")

    def metrics(self, prefix: str = "data/") -> dict[str, float]:
        """Flat metrics for the logger: per-reason totals (index-time + load-time) and the load-time fraction."""
        out: dict[str, float] = {}
        for reason in REASONS:
            total = self.counts.get(reason, 0) + self.index_bad.get(reason, 0)
            if total:
                out[f"{prefix}bad/{reason}"] = float(total)
        out[f"{prefix}bad_samples"] = float(sum(self.counts.values()))
        out[f"{prefix}bad_fraction"] = sum(self.counts.values()) / self.seen if self.seen else 0.0
        return out
