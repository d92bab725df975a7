"""Grounded mentions: does the commentary name the events of a game's event log when they happen?

An event type counts as mentioned in a second of output when the type's keyword pattern (below: the phrasings the
synthetic generator's commentary uses for it, so that its own reference commentary names every goal, corner and
save) appears in that second's text. Recall: events named by some second
whose span reaches within ±tol s of the event. Precision: mentions with such an event of their type. Shifting the
event log by `shift` seconds gives the chance level of the same mentions (a control for a model that names events
often but at random).

Rows are per-second outputs `{"start", "end", "text"}`; events are the generator's `{"t", "type", ...}`.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

EVENT_PATTERNS = {
    "goal": r"\bgoal\b(?! kick)|\bit's in\b|\bheaded in\b|\banother for\b",
    "corner": r"\bcorner\b",
    "foul": r"\bfoul\b",
    "save": r"\bsaved?\b|\bstop from\b|\btipped\b|\bturns it\b|\bstraight at the (?:\w+ )?keeper\b|\bgathers\b"
            r"|\bholds on\b|\bpushes it\b",
    "throw_in": r"\bthrow\b",
    "goal_kick": r"\bgoal kick\b",
    "miss": r"\bwide\b|\boff target\b|\bover the bar\b",
}
_PATTERNS = {k: re.compile(v, re.I) for k, v in EVENT_PATTERNS.items()}


def _patterns(types: Iterable[str] | None) -> dict[str, re.Pattern]:
    if types is None:
        return _PATTERNS
    unknown = sorted(set(types) - set(_PATTERNS))
    if unknown:
        raise ValueError(f"no mention pattern for event type(s) {', '.join(unknown)}")
    return {k: _PATTERNS[k] for k in types}


def event_scores(rows: Sequence[Mapping], events: Sequence[Mapping], tol: float = 2.0, shift: float = 0.0,
                 types: Iterable[str] | None = None) -> dict:
    """Recall: events (of `types`, default every mapped type) mentioned within ±tol s. Precision: mentions with
    such an event. `shift` moves the event log by that many seconds: the chance level of the same mentions."""
    pats = _patterns(types)
    mentions = [(r["start"], r["end"], k) for r in rows for k, p in pats.items() if r["text"] and p.search(r["text"])]
    evs = [(e["t"] + shift, e["type"]) for e in events if e["type"] in pats]
    hit = sum(any(k == typ and s - tol <= t <= e + tol for s, e, k in mentions) for t, typ in evs)
    good = sum(any(typ == k and s - tol <= t <= e + tol for t, typ in evs) for s, e, k in mentions)
    return {"events": len(evs), "recalled": hit, "mentions": len(mentions), "grounded": good,
            "recall": hit / len(evs) if evs else 0.0, "precision": good / len(mentions) if mentions else 0.0}


def mention_offsets(rows: Sequence[Mapping], events: Sequence[Mapping], lo: float = -2.0,
                    hi: float = 8.0) -> list[float]:
    """Per event (of the mapped types) mentioned in [t+lo, t+hi]: the start of the second whose mention is closest
    after the event (or closest before it, when none is after), minus t. How late the commentary names events."""
    pats = _PATTERNS
    out = []
    for e in events:
        if e["type"] not in pats:
            continue
        near = [r["start"] - e["t"] for r in rows
                if r["text"] and lo <= r["start"] - e["t"] <= hi and pats[e["type"]].search(r["text"])]
        after = [d for d in near if d >= 0]
        if near:
            out.append(min(after) if after else max(near))
    return out
