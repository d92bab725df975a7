"""An append-only JSON-lines cache of verdicts, so an interrupted evaluation resumes without paying twice.

Key: sha256 of the judge identity (kind + model + base_url; never the API key) and the full prompt. One line per
verdict: {"key": ..., "choice": ..., "raw": ...}, flushed as soon as it is known (`append_log.AppendLog`: a half line
left by a crash loses that one verdict and nothing else). Verdicts whose answer was lost in transport
(`Verdict.cacheable` False) are not stored, so a resumed run asks again.
"""

from __future__ import annotations

import hashlib
import os

from streaming_vlm.eval.append_log import AppendLog
from streaming_vlm.eval.verdict import CHOICES, Verdict


def cache_key(judge_identity: str, prompt: str) -> str:
    return hashlib.sha256(f"{judge_identity}\n{prompt}".encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, path: str | os.PathLike):
        self._log = AppendLog(path, "judge cache", accept=lambda entry: entry.get("choice") in CHOICES)
        self.path = self._log.path

    @property
    def unreadable_lines(self) -> int:
        return self._log.unreadable_lines

    def __len__(self) -> int:
        return len(self._log)

    def get(self, key: str) -> Verdict | None:
        entry = self._log.get(key)
        return None if entry is None else Verdict(entry["choice"], str(entry.get("raw", "")))

    def put(self, key: str, verdict: Verdict) -> None:
        if verdict.cacheable:
            self._log.put(key, {"choice": verdict.choice, "raw": verdict.raw})
