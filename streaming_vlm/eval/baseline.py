"""`eval baseline`: commentary for every reference video from an OpenAI-compatible vision chat model, written in
the prediction format the judge reads (the GPT-4o-mini baseline of the paper's table, or any other endpoint).

What each request holds is `baseline_protocol.py`. How the run goes:

- One job per reference unit (`generate.generation_jobs`, the same units `eval generate` runs): a whole game for
  Inf-Streams (cut into windows), one window per LiveSports event (its pre-event commentary as context).
- Videos run on a bounded thread pool (`concurrency` videos at once); the windows of one video run in order, since
  each window's answer is the next one's context.
- Every answer goes to an append-only cache (`append_log.AppendLog`) the moment it arrives, keyed by the sha256 of
  the endpoint and the full request body (images included). A rerun of the same command rebuilds the same requests
  from the cached answers and sends only those never answered: a killed run resumes without paying twice. Requests
  that were in flight at the kill had no answer and are sent again.
- A failure that retries cannot fix (the endpoint down, a refused request, answers that stay unreadable) stops the
  run with one line; what was answered stays cached.
- The output is written once, atomically: a header row {"record": "header", ...} holding every choice (endpoint,
  model, protocol, prompts) and the cost (HTTP requests and tokens of this run; tokens of all answers, cached ones
  included), then one row {"video", "start", "end", "text"} (+ "event_id") per window.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping, Sequence

from streaming_vlm.data.video import VideoError, VideoReader
from streaming_vlm.errors import UserError
from streaming_vlm.eval.append_log import AppendLog
from streaming_vlm.eval.baseline_protocol import BaselineProtocol, request_body, window_frames, windows
from streaming_vlm.eval.chat_client import ChatClient, EndpointUnavailable
from streaming_vlm.eval.generate import resolve_video
from streaming_vlm.eval.jsonl import write_rows


class _Stopped(Exception):
    """Another video failed: this one stops before its next request."""


def request_key(client: ChatClient, body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{client.base_url}\n{text}".encode("utf-8")).hexdigest()


def _job_span(job: Mapping[str, Any], reader: VideoReader, protocol: BaselineProtocol) -> list[tuple[float, float]]:
    try:
        duration = reader.duration
    except VideoError as err:
        raise UserError(str(err)) from None
    start = float(job["video_start"] or 0.0)
    end = duration if job["video_end"] is None else min(float(job["video_end"]), duration)
    if job["event_id"] is not None:  # a LiveSports event is one window, whatever its length
        return [(start, end)] if end > start else []
    return windows(start, end, protocol.window_seconds)


def _commentate(job, client, protocol, cache, video_root, stop, tally) -> list[dict[str, Any]]:
    reader = VideoReader(resolve_video(job["video"], video_root), fps=protocol.fps)
    previous, rows = str(job["previous_text"] or ""), []
    t0 = time.perf_counter()
    for start, end in _job_span(job, reader, protocol):
        if stop.is_set():
            raise _Stopped
        try:
            frames = window_frames(reader, protocol, start, end)
        except VideoError as err:
            raise UserError(str(err)) from None
        if len(frames) == 0:
            tally("windows_without_frames")
            continue
        body = request_body(protocol, client.model, frames, start, end, previous)
        key = request_key(client, body)
        answer = cache.get(key)
        if answer is None:
            reply = client.complete(body)
            if reply.content is None:
                raise EndpointUnavailable(
                    f"baseline model at {client.url} kept answering unreadable bodies for {job['video']} "
                    f"{start:g}-{end:g} s (last: {reply.unreadable[:80]!r})"
                )
            answer = {"content": reply.content, "usage": reply.usage}
            cache.put(key, answer)
        else:
            tally("answers_from_cache")
        for name in ("prompt_tokens", "completion_tokens"):
            tally(name, int((answer.get("usage") or {}).get(name) or 0))
        text = " ".join(str(answer["content"]).split())
        previous = f"{previous} {text}".strip()
        row = {"video": job["video"], "start": start, "end": end, "text": text}
        if job["event_id"] is not None:
            row["event_id"] = job["event_id"]
        rows.append(row)
    label = job["video"] if job["event_id"] is None else f"{job['video']} event {job['event_id']}"
    print(f"baseline {label}: {len(rows)} windows in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return rows


def make_baseline(
    jobs: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike,
    client: ChatClient,
    protocol: BaselineProtocol,
    *,
    video_root: str | os.PathLike | None = None,
    cache_path: str | os.PathLike | None = None,
    concurrency: int = 4,
    reference: str = "",
) -> dict[str, Any]:
    """Commentate every job, write `out_path` (header + rows) and return the header."""
    cache = AppendLog(cache_path or f"{out_path}.requests.jsonl", "baseline request cache",
                      accept=lambda entry: isinstance(entry.get("content"), str))
    counts = {"windows_without_frames": 0, "answers_from_cache": 0, "prompt_tokens": 0, "completion_tokens": 0}
    lock, stop = threading.Lock(), threading.Event()

    def tally(name: str, amount: int = 1) -> None:
        with lock:
            counts[name] += amount

    results: list[list[dict] | None] = [None] * len(jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        futures = {pool.submit(_commentate, job, client, protocol, cache, video_root, stop, tally): i
                   for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except BaseException:
                stop.set()
                raise
    finally:  # `stop` is set only after a real failure, so that failure is what propagates, never _Stopped
        pool.shutdown(wait=True, cancel_futures=True)

    rows = [row for video_rows in results for row in (video_rows or [])]
    header = {
        "record": "header",
        "system": "baseline",
        "reference": reference,
        "endpoint": {"base_url": client.base_url, "model": client.model, "api_key_env": client.api_key_env},
        "protocol": protocol.as_dict(),
        "jobs": len(jobs),
        "windows": len(rows),
        "windows_without_frames": counts["windows_without_frames"],
        "answers_from_cache": counts["answers_from_cache"],
        "cost": {
            "this_run": client.usage(),  # HTTP requests sent (retries included) and tokens billed by this run
            "all_answers": {"prompt_tokens": counts["prompt_tokens"], "completion_tokens": counts["completion_tokens"]},
        },
        "cache": str(Path(cache.path)),
    }
    write_rows(out_path, [header] + rows)
    return header
