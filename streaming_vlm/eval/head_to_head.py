"""Judge the model against a baseline on every segment, twice: once with the model as A, once as B.

Showing each pair in both orders cancels a judge's position bias. Each (segment, order) becomes one verdict record:

    {"record": "verdict", "segment": id, "video": ..., "start": s, "end": e,
     "order": "model_first" | "model_second", "model_slot": "A" | "B",
     "choice": "A" | "B" | "tie" | "invalid" | null,
     "outcome": "model" | "baseline" | "tie" | "invalid" | "missing",
     "missing": null | "model" | "baseline" | "both", "raw": "..."}

A segment for which the model or the baseline has no output at all is not sent to the judge: both of its records get
outcome "missing" and say which side is missing, so `win_rate.py` can count and list them (never skip them).

Comparisons run on a bounded thread pool (`concurrency`); each verdict goes to the cache (if any) the moment it is
known, and cached verdicts are not asked again, so an interrupted run resumes where it stopped. If the judge becomes
unreachable, pending work is cancelled and the error propagates (completed verdicts stay in the cache).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Sequence

from streaming_vlm.eval.judge_cache import JudgeCache, cache_key
from streaming_vlm.eval.predictions import SystemOutputs, candidate_text
from streaming_vlm.eval.segments import Segment
from streaming_vlm.eval.verdict import Judge, Verdict

ORDERS = (("model_first", "A"), ("model_second", "B"))  # (order name, the slot the model takes)


@dataclass(frozen=True)
class Comparison:
    reference: str
    cand_a: str
    cand_b: str
    protocol: str


def run_comparisons(
    judge: Judge,
    comparisons: Sequence[Comparison],
    cache: JudgeCache | None = None,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[Verdict]:
    """Verdicts in the order of `comparisons`; cached ones are reused, the rest asked on a thread pool."""
    identity = judge.identity()
    verdicts: list[Verdict | None] = [None] * len(comparisons)
    todo = []
    for i, c in enumerate(comparisons):
        key = cache_key(identity, judge.prompt(c.reference, c.cand_a, c.cand_b, c.protocol))
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            verdicts[i] = hit
        else:
            todo.append((i, key, c))

    def ask(item):
        i, key, c = item
        verdict = judge.compare(c.reference, c.cand_a, c.cand_b, c.protocol)
        if cache is not None:
            cache.put(key, verdict)
        return i, verdict

    done = len(comparisons) - len(todo)
    if progress:
        progress(done, len(comparisons))
    if todo:
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
        try:
            for future in as_completed([pool.submit(ask, item) for item in todo]):
                i, verdict = future.result()
                verdicts[i] = verdict
                done += 1
                if progress:
                    progress(done, len(comparisons))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return verdicts  # type: ignore[return-value]


def outcome_of(choice: str, model_slot: str) -> str:
    if choice in ("A", "B"):
        return "model" if choice == model_slot else "baseline"
    return choice  # "tie" or "invalid"


def judge_segments(
    segments: Sequence[Segment],
    model: SystemOutputs,
    baseline: SystemOutputs,
    judge: Judge,
    protocol: str,
    cache: JudgeCache | None = None,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Two verdict records per segment (see the module docstring), in segment order."""
    comparisons: list[Comparison] = []
    slots = []  # per record: (segment, order, model_slot, index into comparisons or missing side)
    for seg in segments:
        cand_model, cand_base = candidate_text(model, seg), candidate_text(baseline, seg)
        missing = {(True, True): "both", (True, False): "model", (False, True): "baseline", (False, False): None}[
            (cand_model is None, cand_base is None)
        ]
        for order, model_slot in ORDERS:
            if missing:
                slots.append((seg, order, model_slot, missing))
                continue
            a, b = (cand_model, cand_base) if model_slot == "A" else (cand_base, cand_model)
            slots.append((seg, order, model_slot, len(comparisons)))
            comparisons.append(Comparison(seg.reference, a, b, protocol))

    verdicts = run_comparisons(judge, comparisons, cache, concurrency, progress)
    records = []
    for seg, order, model_slot, ref in slots:
        record = {
            "record": "verdict",
            "segment": seg.id,
            "video": seg.video,
            "start": seg.start,
            "end": seg.end,
            "order": order,
            "model_slot": model_slot,
        }
        if isinstance(ref, str):
            record.update(choice=None, outcome="missing", missing=ref, raw="")
        else:
            v = verdicts[ref]
            record.update(choice=v.choice, outcome=outcome_of(v.choice, model_slot), missing=None, raw=v.raw)
        records.append(record)
    return records
