"""The whole evaluation as function calls: reference rows + two systems' outputs + a judge -> verdicts -> report.

This is what the CLI runs and what a trainer callback calls:

    from streaming_vlm.eval import OfflineJudge, win_rate_from_outputs
    report = win_rate_from_outputs(
        {"game1.mp4": [{"start": 0, "end": 1, "text": "..."}, ...]},   # the model's per-second segments per video
        baseline_rows_or_mapping,                                      # same shapes, or a SystemOutputs
        reference_rows,                                                # Inf-Streams game rows or LiveSports event rows
        OfflineJudge(),
    )
    report["overall"]["win_rate_pct"]

The protocol is taken from the reference rows unless given: rows with "content" are Inf-Streams games, rows with
"event_asr_text" (HF) or "event_id" + "reference" (ours) are LiveSports-3K-CC events.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from streaming_vlm.errors import UserError
from streaming_vlm.eval.head_to_head import judge_segments
from streaming_vlm.eval.judge_cache import JudgeCache
from streaming_vlm.eval.livesports import is_livesports_row, livesports_segments
from streaming_vlm.eval.offline_judge import DEFAULT_MARGIN, OfflineJudge
from streaming_vlm.eval.openai_judge import DEFAULT_API_KEY_ENV, DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAIJudge
from streaming_vlm.eval.predictions import SystemOutputs, outputs_from_segments
from streaming_vlm.eval.prompts import check_protocol
from streaming_vlm.eval.segments import DEFAULT_MIN_WORDS, DEFAULT_SEGMENT_SECONDS, Segment, inf_streams_segments
from streaming_vlm.eval.verdict import Judge
from streaming_vlm.eval.win_rate import win_rate_report

Outputs = SystemOutputs | Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]]


def detect_protocol(reference_rows: Sequence[Mapping[str, Any]]) -> str:
    if not reference_rows:
        raise UserError("no reference rows")
    first = reference_rows[0]
    if "content" in first:
        return "inf-streams"
    if is_livesports_row(first):
        return "livesports"
    raise UserError(
        "cannot tell the protocol from the reference rows: expected Inf-Streams rows {video, title, content, preasr} "
        "or LiveSports-3K-CC rows {video_id, event_id, begin, end, event_asr_text, ...}"
    )


def segments_for(
    reference_rows: Sequence[Mapping[str, Any]],
    protocol: str = "auto",
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    min_words: int = DEFAULT_MIN_WORDS,
) -> tuple[str, list[Segment]]:
    """(protocol, segments to judge). No segment at all is an error: a win rate would be meaningless."""
    protocol = detect_protocol(reference_rows) if protocol == "auto" else check_protocol(protocol)
    if protocol == "inf-streams":
        segments = inf_streams_segments(reference_rows, segment_seconds, min_words)
        if not segments:
            raise UserError(
                f"no {segment_seconds:g} s segment of the reference has at least {min_words} words "
                "(lower --min-words or check the reference rows)"
            )
    else:
        segments = livesports_segments(reference_rows)
    return protocol, segments


def make_judge(
    kind: str = "offline",
    *,
    base_url: str = DEFAULT_BASE_URL,
    model: str = DEFAULT_MODEL,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    timeout: float = 60.0,
    max_attempts: int = 5,
    backoff_base: float = 1.0,
    seed: int = 1234,
    concurrency: int = 4,
    margin: float = DEFAULT_MARGIN,
) -> Judge:
    if kind == "offline":
        return OfflineJudge(margin=margin)
    if kind == "openai":
        return OpenAIJudge(
            base_url,
            model,
            api_key_env,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            seed=seed,
            concurrency=concurrency,
        )
    raise UserError(f"unknown judge {kind!r} (choose offline or openai)")


def as_outputs(outputs: Outputs, name: str) -> SystemOutputs:
    return outputs if isinstance(outputs, SystemOutputs) else outputs_from_segments(outputs, name)


def run_summary(
    protocol: str,
    judge: Judge,
    segments: Sequence[Segment],
    model: SystemOutputs,
    baseline: SystemOutputs,
    segment_seconds: float,
    min_words: int,
) -> dict[str, Any]:
    """Facts about a run that the report carries: what was judged, by whom, and what input was skipped."""
    videos = {s.video for s in segments}
    predictions = {}
    for side in (model, baseline):
        info = side.summary()
        info["reference_videos_without_output"] = sorted(videos - set(side.by_video))
        predictions[side.name] = info
    summary = {"record": "run", "protocol": protocol, "judge": judge.identity(), "segments": len(segments)}
    if protocol == "inf-streams":
        summary.update(segment_seconds=segment_seconds, min_words=min_words)
    summary["predictions"] = predictions
    return summary


def judge_outputs(
    model_outputs: Outputs,
    baseline_outputs: Outputs,
    reference_rows: Sequence[Mapping[str, Any]],
    judge: Judge,
    *,
    protocol: str = "auto",
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    min_words: int = DEFAULT_MIN_WORDS,
    cache: JudgeCache | str | os.PathLike | None = None,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run summary, verdict records): every segment judged in both orders, or marked missing."""
    protocol, segments = segments_for(reference_rows, protocol, segment_seconds, min_words)
    model, baseline = as_outputs(model_outputs, "model"), as_outputs(baseline_outputs, "baseline")
    if cache is not None and not isinstance(cache, JudgeCache):
        cache = JudgeCache(cache)
    records = judge_segments(segments, model, baseline, judge, protocol, cache, concurrency, progress)
    return run_summary(protocol, judge, segments, model, baseline, segment_seconds, min_words), records


def win_rate_from_outputs(
    model_outputs: Outputs,
    baseline_outputs: Outputs,
    reference_rows: Sequence[Mapping[str, Any]],
    judge: Judge,
    *,
    protocol: str = "auto",
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    min_words: int = DEFAULT_MIN_WORDS,
    cache: JudgeCache | str | os.PathLike | None = None,
    concurrency: int = 4,
    missing: str = "loss",
) -> dict[str, Any]:
    """Judge and report in one call (see `win_rate.py` for the report's fields). For trainer callbacks."""
    summary, records = judge_outputs(
        model_outputs,
        baseline_outputs,
        reference_rows,
        judge,
        protocol=protocol,
        segment_seconds=segment_seconds,
        min_words=min_words,
        cache=cache,
        concurrency=concurrency,
    )
    return win_rate_report(records, missing, meta=summary)
