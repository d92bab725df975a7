"""`python -m streaming_vlm.eval {judge,report,generate,baseline,run,quality}`: the evaluation from the command line.

    # 1. run the streaming model over the reference videos -> per-second predictions (engine settings: --set K=V)
    python -m streaming_vlm.eval generate --reference games.jsonl --video-root videos/ --out model.jsonl \
        --model_path checkpoints/tiny-qwen3vl --set temperature=0

    # 2. judge model vs baseline on every segment, both orders -> verdicts JSONL (+ the table)
    python -m streaming_vlm.eval judge --predictions model.jsonl --baseline gpt4o_mini.jsonl \
        --reference games.jsonl --out verdicts.jsonl --judge openai --model gpt-4o-mini

    # 3. win rates from verdicts (overall, per video, ties, invalid, missing) -> JSON + table
    python -m streaming_vlm.eval report verdicts.jsonl --json report.json

    # the baseline's commentary from an OpenAI-compatible vision chat model (protocol: baseline_protocol.py)
    python -m streaming_vlm.eval baseline --reference games.jsonl --video-root videos/ --out gpt4o_mini.jsonl

    # all of it at once: generate what is missing, judge, report (JSON + markdown, bootstrap CI) in OUT/
    python -m streaming_vlm.eval run --model_path ckpt --reference games.jsonl --video-root videos/ \
        --baseline gpt4o_mini.jsonl --judge openai --out-dir OUT

    # word-level figures of one system: commentary words, grounded event mentions, ROUGE-L per segment
    python -m streaming_vlm.eval quality --predictions model.jsonl --reference games.jsonl \
        --vocabulary train_with_seeks.jsonl --events data/events/eval --json quality.json

Bad input ends with one line on stderr and exit code 2 (`streaming_vlm.errors.cli_entry`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streaming_vlm.errors import UserError, cli_entry
from streaming_vlm.output_files import check_outputs, write_atomic
from streaming_vlm.eval.baseline import make_baseline
from streaming_vlm.eval.baseline_protocol import BaselineProtocol
from streaming_vlm.eval.chat_client import ChatClient
from streaming_vlm.eval.evaluate import evaluate
from streaming_vlm.eval.generate import generation_jobs, load_streaming_inference
from streaming_vlm.eval.sharded_generate import generate_sharded
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="{judge,report,generate,baseline,run,quality}")

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
    _add_sharding_args(g)
    _add_baseline_parser(sub)
    _add_run_parser(sub)

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
    if not overrides.get("model_path"):
        raise UserError("generate needs a model: --model_path DIR (or --set model_path=DIR)")
    from streaming_vlm.inference.config import StreamingConfig

    StreamingConfig.from_any({k: v for k, v in overrides.items() if k not in ("video_start", "video_end", "title")})
    reference = read_rows_strict(args.reference, "reference")
    protocol = detect_protocol(reference) if args.protocol == "auto" else args.protocol
    if protocol == "livesports" and ({"start", "end"} & set(overrides)):
        raise UserError("--set start/end: LiveSports events stream over their own [start, end]; drop them")
    jobs = generation_jobs(reference, protocol)
    load_streaming_inference()  # the engine must import before any work is split
    n = generate_sharded(jobs, args.out, overrides, args.video_root, workers=args.workers, devices=args.devices)
    if n is not None:  # None: a torchrun rank other than 0 (rank 0 merges and reports)
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
    commands = {"judge": run_judge, "report": run_report, "generate": run_generate, "baseline": run_baseline,
                "run": run_all,
                "quality": run_quality}
    return commands[args.command](args)


# ------------------------------------------------------------------ sharded generation, the baseline, `run`


def _devices(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise argparse.ArgumentTypeError(f"expected GPU indices such as 0,1,2,3, got {text!r}")
    if len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError(f"a GPU is listed twice in {text!r}")
    return devices


def _add_sharding_args(parser) -> None:
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="processes streaming videos at once (CPU; with --devices, one per GPU)")
    parser.add_argument("--devices", type=_devices, help="GPU indices, one engine each: 0,1,2,3")


def _add_endpoint_args(parser, role: str) -> None:
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"{role} model name")
    parser.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV, help="NAME of the env variable holding the key")
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="requests in flight at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request attempt")
    parser.add_argument("--max-attempts", type=_positive_int, default=5, help="attempts per request (429/5xx/timeouts)")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each retry")


def _add_baseline_parser(sub) -> None:
    defaults = BaselineProtocol()
    b = sub.add_parser("baseline", help="commentary from an OpenAI-compatible vision chat model -> predictions")
    b.add_argument("--reference", required=True, help="reference rows: Inf-Streams games or LiveSports events")
    b.add_argument("--out", required=True, help="predictions JSONL to write (header row + one row per window)")
    b.add_argument("--video-root", help="folder the reference 'video' paths are relative to")
    b.add_argument("--protocol", choices=("auto",) + PROTOCOLS, default="auto")
    _add_endpoint_args(b, "vision chat")
    b.add_argument("--cache", help="request cache JSONL (default: OUT.requests.jsonl)")
    b.add_argument("--window-seconds", type=float, default=defaults.window_seconds, help="one request per window")
    b.add_argument("--fps", type=float, default=defaults.fps, help="frame sampling rate inside a window")
    b.add_argument("--max-frames", type=int, default=defaults.max_frames, help="frames per request, at most")
    b.add_argument("--frame-height", type=int, default=defaults.frame_height, help="frames resized to this height")
    b.add_argument("--jpeg-quality", type=int, default=defaults.jpeg_quality)
    b.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    b.add_argument("--temperature", type=float, default=None, help="default: left to the API")
    b.add_argument("--context-chars", type=int, default=defaults.context_chars,
                   help="characters of earlier commentary passed as context")
    b.add_argument("--query", default=defaults.query, help="the user instruction before the time range")
    b.add_argument("--system-prompt", default=defaults.system_prompt)


def run_baseline(args) -> int:
    protocol = BaselineProtocol(
        window_seconds=args.window_seconds, fps=args.fps, max_frames=args.max_frames, frame_height=args.frame_height,
        jpeg_quality=args.jpeg_quality, max_tokens=args.max_tokens, temperature=args.temperature,
        context_chars=args.context_chars, query=args.query, system_prompt=args.system_prompt,
    )
    reference = read_rows_strict(args.reference, "reference")
    kind = detect_protocol(reference) if args.protocol == "auto" else args.protocol
    jobs = generation_jobs(reference, kind)
    client = ChatClient(args.base_url, args.model, args.api_key_env, role="baseline model", timeout=args.timeout,
                        max_attempts=args.max_attempts, backoff_base=args.backoff, concurrency=args.concurrency)
    try:
        header = make_baseline(jobs, args.out, client, protocol, video_root=args.video_root, cache_path=args.cache,
                               concurrency=args.concurrency, reference=str(args.reference))
    except UserError as err:
        cache = args.cache or f"{args.out}.requests.jsonl"
        raise UserError(f"{err}; answers so far are kept in {cache}: rerun the same command to resume") from None
    finally:
        client.close()
    cost, tokens = header["cost"]["this_run"], header["cost"]["all_answers"]
    print(f"wrote {header['windows']} windows for {len(jobs)} videos to {args.out}")
    print(f"this run: {cost['requests']} requests, {cost['prompt_tokens']} prompt + {cost['completion_tokens']} "
          f"completion tokens; all answers: {tokens['prompt_tokens']} + {tokens['completion_tokens']} tokens "
          f"({header['answers_from_cache']} from the cache)")
    return 0


def _add_run_parser(sub) -> None:
    r = sub.add_parser("run", help="generate what is missing, judge against a baseline, write the report")
    r.add_argument("--model_path", "--model-path", dest="model_path", required=True)
    r.add_argument("--reference", required=True, help="reference rows: Inf-Streams games or LiveSports events")
    r.add_argument("--baseline", required=True, help="the baseline's predictions (e.g. from `eval baseline`)")
    r.add_argument("--out-dir", required=True, help="folder for predictions, verdicts and the report")
    r.add_argument("--video-root", help="folder the reference 'video' paths are relative to")
    r.add_argument("--protocol", choices=("auto",) + PROTOCOLS, default="auto")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="engine config override")
    _add_sharding_args(r)
    r.add_argument("--judge", choices=("offline", "openai"), default="offline")
    _add_endpoint_args(r, "judge")
    r.add_argument("--seed", type=int, default=1234, help="judge seed")
    r.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="offline judge: tie margin on similarity")
    r.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS)
    r.add_argument("--min-words", type=int, default=DEFAULT_MIN_WORDS)
    r.add_argument("--missing", choices=MISSING_POLICIES, default="loss", help="how missing segments count")
    r.add_argument("--resamples", type=_positive_int, default=2000, help="bootstrap resamples for the 95%% interval")


def run_all(args) -> int:
    from streaming_vlm.eval.report_markdown import report_markdown

    load_streaming_inference()
    overrides = {**_overrides(args.set), "model_path": args.model_path}
    judge = make_judge(args.judge, base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                       timeout=args.timeout, max_attempts=args.max_attempts, backoff_base=args.backoff,
                       seed=args.seed, concurrency=args.concurrency, margin=args.margin)
    report = evaluate(args.reference, args.baseline, args.out_dir, judge, overrides=overrides,
                      video_root=args.video_root, protocol=args.protocol, workers=args.workers, devices=args.devices,
                      segment_seconds=args.segment_seconds, min_words=args.min_words, missing=args.missing,
                      concurrency=args.concurrency, resamples=args.resamples, progress=_progress)
    print(report_markdown(report), end="")
    print(f"report: {Path(args.out_dir) / 'report.json'} and {Path(args.out_dir) / 'report.md'}")
    return 0
