"""A bootstrap 95% interval for the win rate, resampling SEGMENTS (the unit the judge sees twice).

The two votes of a segment (both orders) are not independent, so segments, not votes, are drawn with replacement:
each resample takes as many segments as there are, and its win rate is the sum of their model votes over the sum of
their votes in the denominator (the same rule and missing-segment policy as `win_rate.py`). The interval is the
percentile interval of `resamples` such win rates from a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

DEFAULT_RESAMPLES = 2000


def segment_votes(records: Iterable[dict], missing: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """(model votes, votes in the denominator) per segment, in first-seen order."""
    model, votes = defaultdict(int), defaultdict(int)
    for r in records:
        if r.get("record", "verdict") != "verdict":
            continue
        segment = r["segment"]
        votes[segment] += 0 if (r["outcome"] == "missing" and missing == "exclude") else 1
        model[segment] += 1 if r["outcome"] == "model" else 0
    names = list(votes)
    return np.array([model[s] for s in names], float), np.array([votes[s] for s in names], float)


def win_rate_interval(
    records: Iterable[dict],
    missing: str = "loss",
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """{"low_pct", "high_pct", "level", "resamples", "unit"}; the bounds are None when nothing was judged."""
    model, votes = segment_votes(records, missing)
    out: dict[str, Any] = {"level": level, "resamples": resamples, "unit": "segment", "seed": seed,
                           "low_pct": None, "high_pct": None}
    if votes.sum() == 0:
        return out
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(votes), size=(resamples, len(votes)))
    denominators = votes[draws].sum(axis=1)
    rates = np.divide(model[draws].sum(axis=1), denominators, out=np.full(resamples, np.nan),
                      where=denominators > 0)
    rates = rates[~np.isnan(rates)]
    tail = (1.0 - level) / 2.0
    out["low_pct"] = round(100.0 * float(np.quantile(rates, tail)), 2)
    out["high_pct"] = round(100.0 * float(np.quantile(rates, 1.0 - tail)), 2)
    return out
