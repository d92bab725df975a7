"""An append-only JSON-lines cache of verdicts, so an interrupted evaluation resumes without paying twice.

Key: sha256 of the judge identity (kind + model + base_url; never the API key) and the full prompt. One line per
verdict: {"key": ..., "choice": ..., "raw": ...}, flushed as soon as it is known. Reloading skips lines that do not
parse, so a crash in the middle of a write (a half line at the end) loses that one verdict and nothing else; the next
append starts on a fresh line. Verdicts whose answer was lost in transport (`Verdict.cacheable` False) are not
stored, so a resumed run asks again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from streaming_vlm.errors import UserError
from streaming_vlm.eval.verdict import CHOICES, Verdict


def cache_key(judge_identity: str, prompt: str) -> str:
    return hashlib.sha256(f"{judge_identity}\n{prompt}".encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._verdicts: dict[str, Verdict] = {}
        self.unreadable_lines = 0
        self._starts_mid_line = False  # the previous run died mid-line: do not glue onto its half line
        if self.path.exists():
            self._load()
        elif not self.path.parent.exists():
            raise UserError(f"cache folder does not exist: {self.path.parent}")

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read judge cache {self.path}: {err.strerror}") from None
        self._starts_mid_line = bool(data) and not data.endswith(b"\n")
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                key, choice = entry["key"], entry["choice"]
                if not isinstance(key, str) or choice not in CHOICES:
                    raise ValueError
                self._verdicts[key] = Verdict(choice, str(entry.get("raw", "")))
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    self.unreadable_lines += 1

    def __len__(self) -> int:
        return len(self._verdicts)

    def get(self, key: str) -> Verdict | None:
        return self._verdicts.get(key)

    def put(self, key: str, verdict: Verdict) -> None:
        if not verdict.cacheable:
            return
        line = json.dumps({"key": key, "choice": verdict.choice, "raw": verdict.raw}, ensure_ascii=False) + "\n"
        with self._lock:
            self._verdicts[key] = verdict
            try:
                with self.path.open("ab") as f:
                    if self._starts_mid_line:
                        f.write(b"\n")
                        self._starts_mid_line = False
                    f.write(line.encode("utf-8"))
            except OSError as err:
                raise UserError(f"cannot write judge cache {self.path}: {err.strerror}") from None

