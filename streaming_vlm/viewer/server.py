"""`--serve PORT`: the viewer page on http://127.0.0.1:PORT/, fed live by the run (stdlib http.server).

    GET  /         the page (page.py, live mode)
    GET  /video    the input video when it is a file (with byte ranges, so the page can seek)
    GET  /events   server-sent events: every cue so far, then each new one as it is made; `event: end` when the
                   run has ended
    POST /ask      {"question": "..."}: queued for the engine, answered at the next second like --interactive

The server is a writer of the run (segment / answer / skipped / close, as output.py's), so it sees exactly what
the output files get. It binds 127.0.0.1 only, answers only requests whose Host is this loopback address (a page
elsewhere cannot reach it through DNS rebinding), and takes questions only as JSON (a cross-site form cannot post
them without a CORS preflight, which it does not grant).
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streaming_vlm.errors import UserError
from streaming_vlm.viewer.page import render

HOST = "127.0.0.1"
MAX_QUESTION_BYTES = 4096
KEEPALIVE_S = 15.0  # an idle event stream sends a comment this often, so a closed page is noticed


class ViewerServer:
    def __init__(self, port: int, video_path: str | None = None, title: str | None = None):
        if not 0 <= int(port) <= 65535:
            raise UserError(f"--serve port must be in 0..65535, got {port}")
        self.video_path = video_path if video_path and os.path.isfile(video_path) else None
        self.title = title or (os.path.basename(video_path) if video_path else "live commentary")
        self.events: list[dict] = []
        self.finished = False
        self.cond = threading.Condition()
        self.questions: "queue.Queue[str | None]" = queue.Queue()
        try:
            self.httpd = ThreadingHTTPServer((HOST, int(port)), _handler(self))
        except OSError as err:
            raise UserError(f"cannot serve the viewer on {HOST}:{port}: {err.strerror or err}") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.url = f"http://{HOST}:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="viewer", daemon=True)
        self.thread.start()

    # ---- the run's writer interface -----------------------------------------------------------------------------
    def _publish(self, event: dict) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def segment(self, segment: dict) -> None:
        self._publish({"type": "segment", "start": segment["start"], "end": segment["end"],
                       "text": segment["text"]})

    def answer(self, answer: dict) -> None:
        self._publish({"type": "answer", "time": answer["time"], "question": answer["question"],
                       "text": answer["text"]})

    def skipped(self, event: dict) -> None:
        self._publish({k: event[k] for k in ("type", "start", "end", "reason")})

    def close(self, commit: bool = True) -> None:
        """The run has ended (`commit`: cleanly, as the output writers take it): event streams finish with
        `event: end`; the page itself stays served."""
        with self.cond:
            self.finished = True
            self.cond.notify_all()

    def shutdown(self) -> None:
        self.close()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- requests -----------------------------------------------------------------------------------------------
    def page(self) -> bytes:
        return render(self.title, "/video" if self.video_path else None).encode("utf-8")

    def stream_events(self, write) -> None:
        """Write every event so far, then each new one, until the run ends (or the client goes away)."""
        sent = 0
        while True:
            with self.cond:
                if sent == len(self.events) and not self.finished:
                    self.cond.wait(KEEPALIVE_S)
                pending, finished = self.events[sent:], self.finished
            sent += len(pending)
            chunk = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in pending)
            if finished and sent == len(self.events):
                write((chunk + "event: end\ndata: {}\n\n").encode("utf-8"))
                return
            write(chunk.encode("utf-8") if chunk else b": keep-alive\n\n")

    def ask(self, body: bytes) -> tuple[HTTPStatus, str]:
        if self.finished:
            return HTTPStatus.CONFLICT, "the stream has ended"
        try:
            question = json.loads(body.decode("utf-8"))["question"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return HTTPStatus.BAD_REQUEST, 'expected JSON {"question": "..."}'
        if not isinstance(question, str) or not question.strip():
            return HTTPStatus.BAD_REQUEST, "empty question"
        self.questions.put(" ".join(question.split()))
        return HTTPStatus.ACCEPTED, "queued"


def _handler(server: ViewerServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # the run's stderr is for the run
            pass

        def _host_ok(self) -> bool:
            if self.headers.get("Host") in {f"{HOST}:{server.port}", f"localhost:{server.port}"}:
                return True
            self._reply(HTTPStatus.FORBIDDEN, b"wrong Host", "text/plain")
            return False

        def _reply(self, status, body: bytes, ctype: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._reply(HTTPStatus.OK, server.page(), "text/html; charset=utf-8")
            elif path == "/video" and server.video_path:
                self._video()
            elif path == "/events":
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def write(data: bytes) -> None:
                    self.wfile.write(data)
                    self.wfile.flush()

                try:
                    server.stream_events(write)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        do_HEAD = do_GET

        def do_POST(self):
            if not self._host_ok():
                return
            if self.path != "/ask" or self.headers.get_content_type() != "application/json":
                self._reply(HTTPStatus.NOT_FOUND if self.path != "/ask" else HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            b"POST /ask takes application/json", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_QUESTION_BYTES:
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length else HTTPStatus.BAD_REQUEST,
                            b"question missing or too long", "text/plain")
                return
            status, message = server.ask(self.rfile.read(length))
            self._reply(status, json.dumps({"status": message}).encode(), "application/json")

        def _video(self):
            """The file, whole or the one byte range asked for (`Range: bytes=a-b`)."""
            size = os.path.getsize(server.video_path)
            start, end = 0, size - 1
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
            if match and (match[1] or match[2]):
                if match[1]:
                    start, end = int(match[1]), min(int(match[2]) if match[2] else size - 1, size - 1)
                else:  # the last N bytes
                    start = max(0, size - int(match[2]))
                if start > end:
                    self._reply(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "text/plain",
                                {"Content-Range": f"bytes */{size}"})
                    return
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "video/mp4" if server.video_path.endswith(".mp4") else
                             "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if self.command == "HEAD":
                return
            with open(server.video_path, "rb") as fh:
                fh.seek(start)
                left = end - start + 1
                try:
                    while left > 0:
                        block = fh.read(min(1 << 16, left))
                        if not block:
                            break
                        self.wfile.write(block)
                        left -= len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass

    return Handler
