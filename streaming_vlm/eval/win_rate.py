"""Win rate of the model against the baseline, from verdict records (see `head_to_head.py`), overall and per video.

Every segment contributes two votes, one per order. A vote is:
- a model win (the judge chose the model's slot)      -> counts 1 for the model
- a baseline win                                      -> counts 0
- a tie or an invalid answer                          -> counts 0 and STAYS in the denominator
- missing (model or baseline had no output there)     -> depends on `missing`:

    missing="loss" (default): the vote stays in the denominator and counts 0 for the model. A model that says nothing
        over a segment has lost it; a segment the baseline lacks cannot be won by walkover either, so an incomplete
        baseline file can never inflate the model's score. This is the conservative choice.
    missing="exclude": missing votes leave the denominator (useful to diagnose a partial baseline file).

Either way missing segments are counted and listed in the report (`missing.model`, `missing.baseline`); nothing is
dropped silently.

    win_rate_pct = 100 * model_votes / votes_in_denominator        (None when the denominator is 0)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from streaming_vlm.errors import UserError

MISSING_POLICIES = ("loss", "exclude")
OUTCOMES = ("model", "baseline", "tie", "invalid", "missing")


def _tally(records: list[dict], missing_policy: str) -> dict[str, Any]:
    counts = {o: 0 for o in OUTCOMES}
    for r in records:
        counts[r["outcome"]] += 1
    votes = len(records) - (counts["missing"] if missing_policy == "exclude" else 0)
    return {
        "segments": len({r["segment"] for r in records}),
        "votes": votes,
        "model_votes": counts["model"],
        "baseline_votes": counts["baseline"],
        "ties": counts["tie"],
        "invalid": counts["invalid"],
        "missing_votes": counts["missing"],
        "win_rate_pct": round(100.0 * counts["model"] / votes, 2) if votes else None,
    }


def _check(records: list[dict]) -> None:
    seen = set()
    for n, r in enumerate(records, start=1):
        for field in ("segment", "video", "order", "outcome"):
            if field not in r:
                raise UserError(f"verdict record {n}: missing field '{field}'")
        if r["outcome"] not in OUTCOMES:
            raise UserError(f"verdict record {n}: unknown outcome {r['outcome']!r} (expected {', '.join(OUTCOMES)})")
        key = (r["segment"], r["order"])
        if key in seen:
            raise UserError(f"verdict record {n}: segment {r['segment']} has two verdicts for order {r['order']}")
        seen.add(key)


def win_rate_report(records: Iterable[dict], missing: str = "loss", meta: dict | None = None) -> dict[str, Any]:
    """The report dict: overall and per-video tallies, missing segments listed, plus `meta` (run facts) if given."""
    if missing not in MISSING_POLICIES:
        raise UserError(f"unknown missing-segment policy {missing!r} (choose {' or '.join(MISSING_POLICIES)})")
    records = [r for r in records if r.get("record", "verdict") == "verdict"]
    _check(records)
    by_video: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_video[r["video"]].append(r)
    orders_per_segment: dict[str, int] = defaultdict(int)
    for r in records:
        orders_per_segment[r["segment"]] += 1
    missing_model = sorted({r["segment"] for r in records if r.get("missing") in ("model", "both")})
    missing_baseline = sorted({r["segment"] for r in records if r.get("missing") in ("baseline", "both")})
    report = {
        "missing_policy": missing,
        "overall": _tally(records, missing),
        "per_video": {video: _tally(rs, missing) for video, rs in sorted(by_video.items())},
        "missing": {
            "segments": len(set(missing_model) | set(missing_baseline)),
            "model": missing_model,
            "baseline": missing_baseline,
        },
        # segments judged in only one order (e.g. a verdict file cut short); kept in the counts, listed here
        "single_order_segments": sorted(s for s, n in orders_per_segment.items() if n != 2),
    }
    if meta:
        report["run"] = meta
    return report


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per video and the overall row, plus notes on missing/skipped input."""

    def pct(value):
        return "   n/a" if value is None else f"{value:6.2f}"

    head = (
        f"{'video':<40} {'segs':>5} {'votes':>6} {'model':>6} {'base':>6} "
        f"{'ties':>5} {'inval':>5} {'miss':>5} {'win%':>6}"
    )
    lines = [head, "-" * len(head)]
    rows = list(report["per_video"].items()) + [("OVERALL", report["overall"])]
    for name, t in rows:
        if name == "OVERALL":
            lines.append("-" * len(head))
        label = name if len(name) <= 40 else "..." + name[-37:]
        lines.append(
            f"{label:<40} {t['segments']:>5} {t['votes']:>6} {t['model_votes']:>6} {t['baseline_votes']:>6} "
            f"{t['ties']:>5} {t['invalid']:>5} {t['missing_votes']:>5} {pct(t['win_rate_pct'])}"
        )
    miss = report["missing"]
    policy = "counted as model losses" if report["missing_policy"] == "loss" else "excluded from the denominator"
    lines.append(
        f"missing segments: {miss['segments']} (no model output: {len(miss['model'])}, "
        f"no baseline output: {len(miss['baseline'])}; {policy})"
    )
    for side in ("model", "baseline"):
        if miss[side]:
            shown = ", ".join(miss[side][:5]) + (f", ... (+{len(miss[side]) - 5})" if len(miss[side]) > 5 else "")
            lines.append(f"  without {side} output: {shown}")
    if report["single_order_segments"]:
        lines.append(f"segments judged in one order only: {len(report['single_order_segments'])}")
    for side, info in (report.get("run", {}).get("predictions") or {}).items():
        uncovered = info.get("reference_videos_without_output") or []
        if uncovered:
            lines.append(
                f"{side} predictions: no output at all for {len(uncovered)} reference video(s), e.g. {uncovered[0]!r} "
                "(check that 'video' names match the reference)"
            )
        if info.get("skipped_lines"):
            lines.append(
                f"{side} predictions: skipped {info['skipped_lines']} malformed line(s) of {info.get('source', '?')} "
                f"(e.g. {info['skipped_examples'][0] if info.get('skipped_examples') else '?'})"
            )
    return "\n".join(lines)
