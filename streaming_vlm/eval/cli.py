"""`python -m streaming_vlm.eval {judge,report,generate,quality}`: the evaluation from the command line.

    # 1. run the streaming model over the reference videos -> per-second predictions (engine settings: --set K=V)
    python -m streaming_vlm.eval generate --reference games.jsonl --video-root videos/ --out model.jsonl \
        --model_path checkpoints/tiny-qwen3vl --set temperature=0

    # 2. judge model vs baseline on every segment, both orders -> verdicts JSONL (+ the table)
    python -m streaming_vlm.eval judge --predictions model.jsonl --baseline gpt4o_mini.jsonl \
        --reference games.jsonl --out verdicts.jsonl --judge openai --model gpt-4o-mini

    # 3. win rates from verdicts (overall, per video, ties, invalid, missing) -> JSON + table
    python -m streaming_vlm.eval report verdicts.jsonl --json report.json

    # word-level figures of one system: commentary words, grounded event mentions, ROUGE-L per segment
    python -m streaming_vlm.eval quality --predictions model.jsonl --reference games.jsonl \
        --vocabulary train_with_seeks.jsonl --events data/events/eval --json quality.json

Bad input ends with one line on stderr and exit code 2 (`streaming_vlm.errors.cli_entry`).
"""

from __future__ import annotations

import argparse
import json
import sys

from streaming_vlm.errors import UserError, cli_entry
from streaming_vlm.output_files import check_outputs, write_atomic
from streaming_vlm.eval.generate import generate_predictions, generation_jobs, load_streaming_inference
from streaming_vlm.eval.judge_cache import JudgeCache
from streaming_vlm.eval.jsonl import read_rows_strict, write_rows
from streaming_vlm.eval.offline_judge import DEFAULT_MARGIN
from streaming_vlm.eval.openai_judge import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    JudgeRejected,
    JudgeUnavailable,
)
from streaming_vlm.eval.pipeline import detect_protocol, judge_outputs, make_judge
from streaming_vlm.eval.predictions import load_outputs
from streaming_vlm.eval.prompts import PROTOCOLS
from streaming_vlm.eval.quality import commentary_quality, format_quality, read_event_logs, training_vocabulary
from streaming_vlm.eval.segments import DEFAULT_MIN_WORDS, DEFAULT_SEGMENT_SECONDS
from streaming_vlm.eval.win_rate import MISSING_POLICIES, format_table, win_rate_report


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other bad input (argparse would print usage too)
        raise UserError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m streaming_vlm.eval", description="Evaluate a streaming commentator.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{judge,report,generate,quality}")

    j = sub.add_parser("judge", help="judge model vs baseline on every segment, in both orders")
    j.add_argument("--predictions", required=True, help="the model's predictions (JSONL)")
    j.add_argument("--baseline", required=True, help="the baseline's predictions (JSONL)")
    j.add_argument("--reference", required=True, help="reference rows: Inf-Streams games or LiveSports events")
    j.add_argument("--out", required=True, help="verdicts JSONL to write")
    j.add_argument("--protocol", choices=("auto",) + PROTOCOLS, default="auto")
    j.add_argument("--judge", choices=("offline", "openai"), default="offline")
    j.add_argument("--base-url", default=DEFAULT_BASE_URL, help="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    j.add_argument("--model", default=DEFAULT_MODEL, help="judge model name")
    j.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV, help="NAME of the env variable holding the API key")
    j.add_argument("--concurrency", type=_positive_int, default=4, help="requests in flight at once")
    j.add_argument("--timeout", type=float, default=60.0, help="seconds per request attempt")
    j.add_argument("--max-attempts", type=_positive_int, default=5, help="attempts per request (429/5xx/timeouts)")
    j.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each retry")
    j.add_argument("--seed", type=int, default=1234)
    j.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="offline judge: tie margin on similarity")
    j.add_argument("--cache", help="judge cache JSONL (default: OUT.cache.jsonl)")
    j.add_argument("--no-cache", action="store_true", help="do not read or write a judge cache")
    j.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS)
    j.add_argument("--min-words", type=int, default=DEFAULT_MIN_WORDS)
    j.add_argument("--missing", choices=MISSING_POLICIES, default="loss", help="how missing segments count")
    j.add_argument("--report", help="also write the report JSON here")

    r = sub.add_parser("report", help="win rates from a verdicts file")
    r.add_argument("verdicts", help="verdicts JSONL written by `judge`")
    r.add_argument("--json", help="write the report JSON to this file ('-' for stdout)")
    r.add_argument("--missing", choices=MISSING_POLICIES, default="loss", help="how missing segments count")

    g = sub.add_parser("generate", help="run the streaming model over the reference videos -> per-second rows")
    g.add_argument("--reference", required=True, help="reference rows: Inf-Streams games or LiveSports events")
    g.add_argument("--out", required=True, help="predictions JSONL to write")
    g.add_argument("--model_path", "--model-path", dest="model_path", help="checkpoint directory or hub id")
    g.add_argument("--video-root", help="folder the reference 'video' paths are relative to")
    g.add_argument("--protocol", choices=("auto",) + PROTOCOLS, default="auto")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="engine config override")

    q = sub.add_parser("quality", help="commentary words, grounded event mentions and ROUGE-L of one system")
    q.add_argument("--predictions", required=True, help="the system's predictions (JSONL)")
    q.add_argument("--reference", required=True, help="reference rows: Inf-Streams games")
    q.add_argument("--vocabulary", required=True, action="append",
                   help="training data file whose commentary words count as commentary words (repeatable)")
    q.add_argument("--events", help="folder of per-game event logs (events/<split>/ of data.synthetic)")
    q.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS)
    q.add_argument("--min-words", type=int, default=DEFAULT_MIN_WORDS)
    q.add_argument("--json", help="write the figures as JSON to this file")
    return parser


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rjudged {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _write_json(path: str, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def run_judge(args) -> int:
    inputs = (args.predictions, args.baseline, args.reference)
    check_outputs({"--out": args.out, "--report": args.report,
                   "--cache": None if args.no_cache else (args.cache or f"{args.out}.cache.jsonl")}, inputs)
    reference = read_rows_strict(args.reference, "reference")
    model = load_outputs(args.predictions, "model")
    baseline = load_outputs(args.baseline, "baseline")
    judge = make_judge(
        args.judge,
        base_url=args.base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        backoff_base=args.backoff,
        seed=args.seed,
        concurrency=args.concurrency,
        margin=args.margin,
    )
    cache = None if args.no_cache else JudgeCache(args.cache or f"{args.out}.cache.jsonl")
    try:
        summary, records = judge_outputs(
            model,
            baseline,
            reference,
            judge,
            protocol=args.protocol,
            segment_seconds=args.segment_seconds,
            min_words=args.min_words,
            cache=cache,
            concurrency=args.concurrency,
            progress=_progress,
        )
    except (JudgeUnavailable, JudgeRejected) as err:
        if cache is None:
            raise
        kept = f"{len(cache)} verdict(s) kept in {cache.path}"
        raise UserError(f"{err}; {kept}: rerun the same command to resume") from None
    write_rows(args.out, [summary] + records)
    report = win_rate_report(records, args.missing, meta=summary)
    if args.report:
        _write_json(args.report, report)
    print(format_table(report))
    print(f"verdicts: {args.out}")
    return 0


def run_report(args) -> int:
    check_outputs({"--json": args.json}, (args.verdicts,))
    rows = read_rows_strict(args.verdicts, "verdicts")
    meta = next((r for r in rows if r.get("record") == "run"), None)
    report = win_rate_report(rows, args.missing, meta=meta)
    text = json.dumps(report, indent=2)
    if args.json == "-":
        print(text)
        print(format_table(report), file=sys.stderr)
        return 0
    if args.json:
        _write_json(args.json, report)
    print(format_table(report))
    return 0


def _overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run_generate(args) -> int:
    # every cheap check first: the output, the engine settings, the reference; then the engine is imported
    check_outputs({"--out": args.out}, (args.reference, args.model_path))
    overrides = _overrides(args.set)
    if args.model_path:
        overrides["model_path"] = args.model_path
    from streaming_vlm.inference.config import StreamingConfig

    StreamingConfig.from_any({k: v for k, v in overrides.items() if k not in ("video_start", "video_end", "title")})
    reference = read_rows_strict(args.reference, "reference")
    protocol = detect_protocol(reference) if args.protocol == "auto" else args.protocol
    if protocol == "livesports" and ({"start", "end"} & set(overrides)):
        raise UserError("--set start/end: LiveSports events stream over their own [start, end]; drop them")
    jobs = generation_jobs(reference, protocol)
    inference = load_streaming_inference()
    n = generate_predictions(jobs, args.out, overrides, args.video_root, inference)
    units = "events" if protocol == "livesports" else "videos"
    print(f"wrote {n} prediction rows for {len(jobs)} {units} to {args.out}")
    return 0


def run_quality(args) -> int:
    reference = read_rows_strict(args.reference, "reference")
    outputs = load_outputs(args.predictions, "model")
    vocab = training_vocabulary(args.vocabulary)
    logs = read_event_logs(args.events) if args.events else None
    report = commentary_quality(outputs, reference, vocab, logs, args.segment_seconds, args.min_words)
    if args.json:
        _write_json(args.json, report)
    print(format_quality(report))
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"judge": run_judge, "report": run_report, "generate": run_generate, "quality": run_quality}
    return commands[args.command](args)
