"""A deterministic judge that needs no network: the candidate whose words are closer to the reference wins.

Metric: word-level ROUGE-L F1 (beta = 1), i.e. 2 * LCS / (len(candidate) + len(reference)) over lowercased word
tokens, computed with rapidfuzz's `Indel.normalized_similarity` on token lists (rapidfuzz is a maintained C++-backed
library and already a project dependency).

Why this metric and not, say, `fuzz.token_set_ratio`:
- It is an F-measure: a candidate loses points both for missing the reference's content (recall) and for words the
  reference does not have (precision), so neither a one-word candidate nor a padded one can score high.
- It counts repeated words. Repetition loops are the typical failure of a streaming commentator in infinite mode;
  a token SET comparison collapses duplicates and would not see them, while LCS over the word sequence does.
- It respects word order, which in commentary follows the order of events.
- It is a standard, documented summarisation metric, so the offline number is easy to interpret.

It is a lexical proxy and no substitute for an LLM judge on broadcast style; use it for smoke tests, CI and training
callbacks. Decision: A if sim(A, ref) - sim(B, ref) > margin, B if sim(B, ref) - sim(A, ref) > margin, else "tie"
(default margin 0.02, i.e. two F1 points). An empty candidate scores 0.
"""

from __future__ import annotations

import json
import re

from rapidfuzz.distance import Indel

from streaming_vlm.eval.prompts import CANDIDATE_CHAR_LIMIT, check_protocol
from streaming_vlm.eval.verdict import Verdict

DEFAULT_MARGIN = 0.02
_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def similarity(candidate: str, reference: str) -> float:
    """Word-level ROUGE-L F1 in [0, 1]; 0 when either side has no words."""
    cand, ref = words(candidate), words(reference)
    if not cand or not ref:
        return 0.0
    return Indel.normalized_similarity(cand, ref)


class OfflineJudge:
    def __init__(self, margin: float = DEFAULT_MARGIN):
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        self.margin = margin

    def identity(self) -> str:
        return f"offline|rougeL-f1|margin={self.margin:g}"

    def prompt(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> str:
        a, b = cand_a[:CANDIDATE_CHAR_LIMIT], cand_b[:CANDIDATE_CHAR_LIMIT]
        return json.dumps([check_protocol(protocol), reference, a, b])

    def compare(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> Verdict:
        check_protocol(protocol)
        sim_a = similarity(cand_a[:CANDIDATE_CHAR_LIMIT], reference)
        sim_b = similarity(cand_b[:CANDIDATE_CHAR_LIMIT], reference)
        raw = f"sim_a={sim_a:.4f} sim_b={sim_b:.4f}"
        if sim_a - sim_b > self.margin:
            return Verdict("A", raw)
        if sim_b - sim_a > self.margin:
            return Verdict("B", raw)
        return Verdict("tie", raw)
