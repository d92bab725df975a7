"""What a judge returns, the strict rule for reading an LLM's answer, and the interface every judge implements.

A judge compares two candidate commentaries against a human reference and answers "A", "B", "tie" (only the offline
judge ties) or "invalid" (the answer could not be read). Win rates never drop ties or invalid answers: they count 0
for the model and stay in the denominator (`win_rate.py`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal, Protocol

Choice = Literal["A", "B", "tie", "invalid"]
CHOICES = ("A", "B", "tie", "invalid")


@dataclass(frozen=True)
class Verdict:
    choice: Choice
    raw: str = ""  # the judge's answer as received (or a short reason), kept for auditing
    cacheable: bool = True  # False when the answer was lost in transport: a resumed run should ask again


def parse_choice(answer: str) -> Choice:
    """STRICT: after stripping whitespace and punctuation the answer must be exactly "A" or "B"; else "invalid"."""
    core = answer.strip(string.whitespace + string.punctuation)
    return core if core in ("A", "B") else "invalid"  # type: ignore[return-value]


class Judge(Protocol):
    def identity(self) -> str:
        """Who judges: kind + model + endpoint. Part of the cache key; never contains a secret."""
        ...

    def prompt(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> str:
        """The full request this comparison sends (deterministic text); the cache key hashes it."""
        ...

    def compare(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> Verdict:
        """Judge one comparison. Raises `JudgeUnavailable` when the judge cannot be reached at all."""
        ...
