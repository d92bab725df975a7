"""`eval run`: the paper's table in one command: generate what is missing, judge, report.

Everything lives in one output folder, so a rerun resumes every step:

    OUT/predictions.jsonl        the model's per-second rows (`sharded_generate.py`; reused when present,
                                 resumed from OUT/predictions.jsonl.parts/ after a kill)
    OUT/verdicts.jsonl           the run summary + one verdict per (segment, order)
    OUT/verdicts.cache.jsonl     the judge cache: a rerun pays no comparison twice
    OUT/report.json              `win_rate.win_rate_report` + "ci95" (bootstrap over segments) + the baseline header
    OUT/report.md                the same as a markdown table (`report_markdown.py`)

The baseline file must exist (made by `eval baseline`, or any file in the prediction format); delete
OUT/predictions.jsonl to regenerate the model's side with other settings.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from streaming_vlm.errors import UserError
from streaming_vlm.eval.bootstrap import win_rate_interval
from streaming_vlm.eval.generate import generation_jobs
from streaming_vlm.eval.judge_cache import JudgeCache
from streaming_vlm.eval.jsonl import read_rows_strict
from streaming_vlm.eval.openai_judge import JudgeRejected, JudgeUnavailable
from streaming_vlm.eval.pipeline import detect_protocol, judge_outputs
from streaming_vlm.eval.predictions import load_outputs
from streaming_vlm.eval.report_markdown import report_markdown
from streaming_vlm.eval.sharded_generate import generate_sharded
from streaming_vlm.eval.jsonl import write_rows
from streaming_vlm.output_files import write_atomic
from streaming_vlm.eval.verdict import Judge
from streaming_vlm.eval.win_rate import win_rate_report


def evaluate(
    reference_path: str | os.PathLike,
    baseline_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    judge: Judge,
    *,
    overrides: Mapping[str, Any] | None = None,
    video_root: str | os.PathLike | None = None,
    protocol: str = "auto",
    workers: int = 1,
    devices: Sequence[str] | None = None,
    segment_seconds: float,
    min_words: int,
    missing: str = "loss",
    concurrency: int = 4,
    resamples: int = 2000,
    progress=None,
) -> dict[str, Any]:
    """Run the three steps; return the report (also written to OUT/report.json and OUT/report.md)."""
    out = Path(out_dir)
    if not out.parent.is_dir():
        raise UserError(f"output folder's parent does not exist: {out.parent}")
    if not Path(baseline_path).is_file():
        raise UserError(f"baseline predictions file not found: {baseline_path} (make one with `eval baseline`)")
    reference = read_rows_strict(reference_path, "reference")
    protocol = detect_protocol(reference) if protocol == "auto" else protocol
    out.mkdir(exist_ok=True)
    predictions = out / "predictions.jsonl"
    if predictions.exists():
        print(f"using the existing model predictions {predictions} (delete it to regenerate)", file=sys.stderr)
    else:
        generate_sharded(generation_jobs(reference, protocol), predictions, overrides, video_root,
                         workers=workers, devices=devices)
    model, baseline = load_outputs(predictions, "model"), load_outputs(baseline_path, "baseline")
    cache = JudgeCache(out / "verdicts.cache.jsonl")
    try:
        summary, records = judge_outputs(model, baseline, reference, judge, protocol=protocol,
                                         segment_seconds=segment_seconds, min_words=min_words, cache=cache,
                                         concurrency=concurrency, progress=progress)
    except (JudgeUnavailable, JudgeRejected) as err:
        raise UserError(f"{err}; {len(cache)} verdict(s) kept in {cache.path}: rerun the same command to resume") \
            from None
    write_rows(out / "verdicts.jsonl", [summary] + records)
    report = win_rate_report(records, missing, meta=summary)
    report["ci95"] = win_rate_interval(records, missing, resamples=resamples)
    if baseline.header:
        report["baseline_header"] = baseline.header
    write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "report.md", report_markdown(report))
    return report
