"""Real-time commentary on a video stream: `python -m streaming_vlm.inference.inference` and its Python API,
`streaming_inference(config)` (flags, presets and examples: docs/inference.md, docs/live.md).

- Outputs (streaming_vlm/output_files.py) are checked before the model loads, written to `<output>.partial` and
  renamed onto `<output>` at a clean end (end of video, Ctrl-C, SIGTERM); a failed run keeps the `.partial` file.
- `--interactive` answers questions typed on stdin at the current second; `--serve PORT` serves the viewer page
  (streaming_vlm/viewer), cues pushed live, questions typed there answered. A live `--video_path` (live_source.py)
  is read in real time; seconds the engine cannot keep up with are skipped (`{"type": "skipped", ...}` events).
- With progress on, a `start-up` line on stderr splits process start to first cue into its phases.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time

STARTED = time.perf_counter()  # the CLI's start-up is timed from here: before any import beyond the stdlib's

from streaming_vlm.errors import UserError, cli_entry  # noqa: E402
from streaming_vlm.inference.config import POS_MODES, StreamingConfig  # noqa: E402


def stdin_questions(stream=None) -> "queue.Queue[str | None]":
    """Questions typed on stdin, one per line, read by a daemon thread; None marks the end of input. A line that is
    not UTF-8 is reported and skipped, not the end of the input."""
    q: "queue.Queue[str | None]" = queue.Queue()
    stream = stream if stream is not None else sys.stdin
    stream = getattr(stream, "buffer", stream)

    def pump():
        try:
            for number, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                except UnicodeDecodeError as err:
                    print(f"error: stdin line {number} is not UTF-8 (byte {err.start}); question skipped",
                          file=sys.stderr, flush=True)
                    continue
                if line.strip():
                    q.put(line.strip())
        finally:
            q.put(None)

    threading.Thread(target=pump, name="stdin-questions", daemon=True).start()
    return q


def _drain(questions) -> list[str]:
    """The questions waiting in the queue (this is its only reader)."""
    out = []
    while questions is not None and not questions.empty():
        out.append(questions.get_nowait())
    return [q for q in out if q is not None]


def streaming_inference(config: StreamingConfig | dict, *, model=None, processor=None, questions=None,
                        source=None, on_segment=None, viewer=None, started: float | None = None) -> dict:
    """Stream `config.video_path` (or `source`, a frames.py source), writing `config.output_path` (WebVTT) and
    `config.emit_json` (JSON lines; "-" = stdout) as it goes; returns segments, answers and timings. `questions`: a
    queue of strings (None = end; default with `config.interactive`: stdin). `viewer`: a `viewer.server.ViewerServer`
    (gets every cue and answer; its page's questions are answered). `started`: when start-up began (`perf_counter`;
    default: this call); start-up ends at the first cue."""
    marks = [("", time.perf_counter() if started is None else started)]  # start-up: (the phase that ends, when)
    from streaming_vlm.model.weights import check_weights
    from streaming_vlm.output_files import check_outputs

    # Cheap checks first, so bad input fails in a second, before torch is imported or any weights load.
    cfg = StreamingConfig.from_any(config)
    check_outputs({"output_path": cfg.output_path, "emit_json": cfg.emit_json}, inputs=(cfg.video_path, cfg.model_path))
    if model is None and cfg.model_path:
        check_weights(cfg.model_path)

    import torch

    from streaming_vlm.inference.engine import StreamingEngine, build_template, check_cache_budget
    from streaming_vlm.inference.frames import open_source
    from streaming_vlm.inference.output import ConsoleWriter, JsonLinesWriter, VttWriter
    from streaming_vlm.model.loading import check_attn_implementation, load_model, load_processor, resolve_device

    marks.append(("imports", time.perf_counter()))  # with the argument checks
    check_attn_implementation(cfg.attn_implementation)
    if viewer is not None:
        if cfg.interactive or questions is not None:
            raise UserError("with --serve, questions are typed in the page: drop --interactive")
        questions = viewer.questions
    if source is None:
        if not cfg.video_path:
            raise UserError("video_path is required")
        if cfg.video_path == "-" and cfg.interactive:
            raise UserError("--interactive reads questions from stdin, which --video_path - streams from: "
                            "ask them in the --serve page instead")
        source = open_source(cfg.video_path, cfg.fps, start=cfg.start, end=cfg.end, max_lag=cfg.max_lag,
                             stall_timeout=cfg.stall_timeout)
    marks.append(("source", time.perf_counter()))
    live = getattr(source, "live", False)
    if model is None and not cfg.model_path:
        raise UserError("model_path is required")
    device = resolve_device(cfg.device)
    processor = processor if processor is not None else load_processor(cfg.model_path)
    template = build_template(processor, cfg)
    template.plain(cfg.previous_text, "--previous_text")
    check_cache_budget(template, cfg, cfg.query)
    marks.append(("processor", time.perf_counter()))
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model_path, attn_implementation=cfg.attn_implementation, dtype=cfg.dtype, device=device)
    marks.append(("model", time.perf_counter()))
    if cfg.interactive and questions is None:
        questions = stdin_questions()

    duration = source.duration
    writers = []
    if cfg.output_path:
        writers.append(VttWriter(cfg.output_path, duration=duration))
    if cfg.emit_json:
        writers.append(JsonLinesWriter(cfg.emit_json))
    console = None if cfg.emit_json == "-" else ConsoleWriter()  # (stdout carries the JSON lines)
    if console is not None and not cfg.output_path:
        writers.append(console)
    if viewer is not None:
        writers.append(viewer)

    engine = StreamingEngine(model, processor, cfg)
    marks.append(("engine init", time.perf_counter()))
    engine.start()
    marks.append(("engine start", time.perf_counter()))
    segments, answers = [], []

    def answer_all(pending):
        for question in pending:
            try:
                answer = engine.ask(question)
            except UserError as err:
                print(f"error: {err}", file=sys.stderr)
                continue
            answers.append(answer)
            for w in writers:
                w.answer(answer)
            if console is not None and console not in writers:
                console.answer(answer)

    from tqdm import tqdm

    bar = tqdm(total=round(duration, 1) if duration else None, unit="s", desc="stream", file=sys.stderr,
               disable=not cfg.progress, dynamic_ncols=True)
    wall0 = time.perf_counter()
    frames, processed = 0, 0.0
    skipped: list[dict] = []  # a live source's skipped runs, not yet written

    def write_skipped(until: float | None) -> None:
        """Write the skipped runs that end by `until` (None: all), so events stay in stream-time order."""
        skipped.extend(source.take_skipped())
        while skipped and (until is None or skipped[0]["end"] <= until):
            event = skipped.pop(0)
            for w in writers:
                if hasattr(w, "skipped"):
                    w.skipped(event)

    finished = False  # a clean end (end of video, Ctrl-C, SIGTERM) publishes the outputs; a failure keeps .partial
    try:
        answer_all(_drain(questions))
        # a live source (`live = True`) has no next second to read while a reply decodes: no lookahead there
        for segment in engine.stream(source, lookahead=not live):
            frames += segment["frames"]
            segments.append(segment)
            if live:
                write_skipped(segment["start"])
            for w in writers:
                w.segment(segment)
            if len(segments) == 1:  # the first cue is out: start-up ends
                marks.append(("first second", time.perf_counter()))
                if cfg.progress:
                    bar.write(format_startup(marks, engine.start_seconds), file=sys.stderr)
            if on_segment is not None:
                on_segment(segment)
            length = segment["end"] - segment["start"]
            processed += length
            bar.update(length)
            if live:  # how long after its second was complete this cue came out, and seconds dropped so far
                bar.set_postfix(lag=f"{source.lag():.1f}s", skipped=source.skipped_seconds,
                                cache=engine.cache.num_tokens)
            else:
                bar.set_postfix(rtf=f"{(time.perf_counter() - wall0) / processed:.2f}", cache=engine.cache.num_tokens)
            answer_all(_drain(questions))  # inserted before the next second's frames
        if cfg.interactive and questions is not None:
            # input may still be arriving (a pipe written after the video ended): wait briefly for its end
            deadline = time.perf_counter() + 2.0
            while time.perf_counter() < deadline:
                try:
                    item = questions.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is None:
                    break
                answer_all([item])
        if live:
            write_skipped(None)
        finished = True
    except KeyboardInterrupt:
        finished = True
        raise
    finally:
        bar.close()
        for w in writers:
            w.close(commit=finished)
        if live and not source.close():
            print("live source: its reader is still blocked in the device (FFmpeg's device reads have no timeout);"
                  " it is left behind", file=sys.stderr)
    if live and source.end_reason != "ended":
        last = segments[-1]["end"] if segments else 0.0
        print(f"live source {source.end_reason}"
              f"{f' (no frame for {cfg.stall_timeout:g} s)' if source.end_reason == 'stalled' else ''}: "
              f"the run ends with the output complete to second {last:g}", file=sys.stderr)

    wall = time.perf_counter() - wall0
    stream_seconds = sum(s["end"] - s["start"] for s in segments)
    stats = engine.stats()
    results = {
        "segments": segments,
        "answers": answers,
        "timings": stats["timings"],
        "stream_seconds": stream_seconds,
        "wall_seconds": wall,
        "rtf": wall / stream_seconds if stream_seconds else None,  # < 1: faster than real time
        "fps_processed": frames / wall if wall else None,
        "tokens_generated": stats["tokens_generated"],
        "decode_ms_per_token": 1000 * stats["timings"]["decode"] / max(stats["tokens_generated"], 1),
        "cache": stats["cache"],
        "budget": stats["budget"],
        "skipped_seconds": source.skipped_seconds if live else 0,  # a live source's seconds never processed
        "source_end": source.end_reason if live else None,
        "startup": {name: t - marks[i][1] for i, (name, t) in enumerate(marks[1:])},  # phase -> wall seconds
    }
    if cfg.progress:
        print(format_timings(results), file=sys.stderr)
    return results


def format_timings(results: dict) -> str:
    from streaming_vlm.inference.timing import STAGES

    t = results["timings"]
    n = max(len(results["segments"]), 1)
    stages = ", ".join(f"{s} {t.get(s, 0.0):.2f}s ({1000 * t.get(s, 0.0) / n:.1f} ms/s)" for s in STAGES)
    rtf = results["rtf"]
    return (f"timing: {results['stream_seconds']:.0f} stream s in {results['wall_seconds']:.1f} s wall"
            f" (rtf {rtf:.3f}, {results['fps_processed'] or 0:.1f} frames/s, "
            f"decode {results['decode_ms_per_token']:.1f} ms/token); {stages}" if rtf is not None
            else f"timing: no stream seconds; {stages}")


def format_startup(marks: list[tuple[str, float]], engine_parts: dict[str, float]) -> str:
    """`start-up T s: phase t s, ...`, from the (phase that ends, when) marks; engine start's parts in brackets."""
    parts = ", ".join(f"{name} {t:.2f} s" for name, t in engine_parts.items())
    phases = [f"{name} {t - marks[i][1]:.2f} s" + (f" ({parts})" if name == "engine start" else "")
              for i, (name, t) in enumerate(marks[1:])]
    return f"start-up {marks[-1][1] - marks[0][1]:.2f} s: " + ", ".join(phases)


def build_parser() -> argparse.ArgumentParser:
    d = StreamingConfig()
    p = argparse.ArgumentParser(prog="python -m streaming_vlm.inference.inference",
                                description="Live commentary on a video with a StreamingVLM-trained Qwen3-VL.")
    p.add_argument("--model_path", required=True, help="checkpoint directory or hub id")
    p.add_argument("--video_path", required=True,
                   help="video file, or live: an http(s) HLS playlist, rtsp://..., /dev/videoN, - (MPEG-TS/fMP4 stdin)")
    p.add_argument("--output_path", default=None, help="WebVTT file to write (default: cues on stdout)")
    p.add_argument("--fps", type=float, default=d.fps, help=f"frames read per second (default {d.fps:g})")
    p.add_argument("--attn_implementation", default=d.attn_implementation,
                   help="auto (flash_attention_2 if flash-attn imports, else sdpa) | sdpa | flash_attention_2 | eager")
    p.add_argument("--window_size", type=int, default=d.window_size, help="vision window in seconds")
    p.add_argument("--text_sliding_window", type=int, default=d.text_sliding_window, help="tail tokens of text kept")
    p.add_argument("--text_sink", type=int, default=d.text_sink, help="head tokens of earlier commentary kept")
    p.add_argument("--max_cache_tokens", type=int, default=d.max_cache_tokens, help="hard cap on cached tokens")
    p.add_argument("--min_pixels", type=int, default=None, help="per-frame vision budget floor (default: template)")
    p.add_argument("--max_pixels", type=int, default=None, help="per-frame vision budget cap (e.g. training's)")
    p.add_argument("--total_pixels", type=int, default=None, help="vision budget of a window (default: template)")
    p.add_argument("--max_new_tokens", type=int, default=d.max_new_tokens, help="tokens per second, at most")
    p.add_argument("--min_new_tokens", type=int, default=d.min_new_tokens, help="force at least this many")
    p.add_argument("--max_answer_tokens", type=int, default=d.max_answer_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--repetition_penalty", type=float, default=d.repetition_penalty)
    p.add_argument("--query", default=None, help="a standing instruction after the system prompt")
    p.add_argument("--previous_text", default=None, help="commentary before the stream starts")
    p.add_argument("--system_prompt", default=None)
    p.add_argument("--emit_json", nargs="?", const="-", metavar="PATH", help="JSON lines: to stdout, or to PATH")
    p.add_argument("--pos_mode", default=d.pos_mode, help=f"{' | '.join(POS_MODES)} (default contiguous)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16 | float16 | float32 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--start", type=float, default=0.0, help="start at this video second")
    p.add_argument("--end", type=float, default=None, help="stop at this video second")
    p.add_argument("--interactive", action="store_true", help="answer questions typed on stdin mid-stream")
    p.add_argument("--no_progress", action="store_true", help="no progress bar or timing summary")
    p.add_argument("--eager", action="store_true", help="debugging: no torch.compile, no CUDA graph (slower)")
    p.add_argument("--max_lag", type=float, default=d.max_lag,
                   help=f"live: complete seconds that may wait before the oldest is skipped (default {d.max_lag:g})")
    p.add_argument("--stall_timeout", type=float, default=d.stall_timeout,
                   help=f"live: end the run after this many seconds without a frame (default {d.stall_timeout:g})")
    p.add_argument("--serve", type=int, default=None, metavar="PORT",
                   help="serve the viewer page on http://127.0.0.1:PORT/ (0: any port) until Ctrl-C or SIGTERM")
    return p


def _interrupt(signum, frame):
    """SIGTERM ends the stream as Ctrl-C does: a clean end, so the outputs are published."""
    raise KeyboardInterrupt


def persist_compile_caches() -> None:
    """Keep Inductor's and Triton's on-disk compile caches in the user's cache directory (torch's default is under
    /tmp) unless the environment names others, so that a second start reuses what the first compiled."""
    root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "streaming-vlm")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(root, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(root, "triton"))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    persist_compile_caches()  # before anything compiles
    args = vars(build_parser().parse_args(argv))
    args["progress"] = not args.pop("no_progress")
    started = STARTED if argv is None else time.perf_counter()  # argv given: called in a running process
    port = args.pop("serve")
    if port is None:
        streaming_inference(args, started=started)
        return
    from streaming_vlm.viewer.server import ViewerServer

    viewer = ViewerServer(port, video_path=args["video_path"])
    print(f"viewer: {viewer.url}", file=sys.stderr, flush=True)
    try:
        streaming_inference(args, viewer=viewer, started=started)
        print(f"stream ended; the viewer stays up at {viewer.url} until Ctrl-C", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:  # the outputs are complete already: closing the page is a clean end
            pass
    finally:
        viewer.shutdown()


if __name__ == "__main__":
    main()
