"""An append-only JSON-lines map from a key to a small JSON object: the store behind every resumable request cache.

One line per entry, `{"key": ..., **value}`, flushed to disk the moment it is known, so a killed run keeps every
answer it got. Reloading skips lines that do not parse (or that `accept` refuses), counting them: a crash in the
middle of a write (a half line at the end) loses that one entry and nothing else, and the next append starts on a
fresh line. Thread-safe.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

from streaming_vlm.errors import UserError


class AppendLog:
    def __init__(self, path: str | os.PathLike, what: str, accept: Callable[[dict], bool] = lambda entry: True):
        self.path = Path(path)
        self.what = what
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self.unreadable_lines = 0
        self._starts_mid_line = False  # the previous run died mid-line: do not glue onto its half line
        if self.path.exists():
            self._load(accept)
        elif not self.path.parent.exists():
            raise UserError(f"{what} folder does not exist: {self.path.parent}")

    def _load(self, accept: Callable[[dict], bool]) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {self.what} {self.path}: {err.strerror}") from None
        self._starts_mid_line = bool(data) and not data.endswith(b"\n")
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not accept(entry):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    self.unreadable_lines += 1
                continue
            key = entry.pop("key")
            self._entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        line = json.dumps({"key": key, **value}, ensure_ascii=False) + "\n"
        with self._lock:
            self._entries[key] = dict(value)
            try:
                with self.path.open("ab") as f:
                    if self._starts_mid_line:
                        f.write(b"\n")
                        self._starts_mid_line = False
                    f.write(line.encode("utf-8"))
            except OSError as err:
                raise UserError(f"cannot write {self.what} {self.path}: {err.strerror}") from None
