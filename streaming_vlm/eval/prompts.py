"""The judge's instructions for each protocol, and the chat messages one comparison sends.

Both protocols ask for a strict one-letter choice between commentary A and commentary B:

- "inf-streams" (Inf-Streams-Eval, 100 s of a full game): broadcast tone and pacing first, then consistency and
  accuracy against the reference transcript.
- "livesports" (LiveSports-3K-CC, one event): semantic alignment with the human commentary first, style only as the
  tie-breaker.

Each candidate is cut to its first `CANDIDATE_CHAR_LIMIT` (8000) characters, so a runaway repetition loop cannot blow
up the request. An empty candidate (the system stayed silent) is shown as an explicit marker, not as nothing.
"""

from __future__ import annotations

from streaming_vlm.errors import UserError

PROTOCOLS = ("inf-streams", "livesports")
CANDIDATE_CHAR_LIMIT = 8000
SILENT_CANDIDATE = "(no commentary: the system stayed silent)"

SYSTEM_PROMPTS = {
    "inf-streams": (
        "You compare two machine-generated live commentaries of the same 100-second stretch of a sports broadcast. "
        "You also receive a transcript of what the human broadcast commentators actually said over that stretch.\n"
        "Choose the better commentary. Judge in this order of priority:\n"
        "1. Broadcast quality: does it sound like real live commentary, with a natural tone and a pace that follows "
        "the play, without rambling, filler, or the same phrases repeated over and over?\n"
        "2. Consistency and accuracy: does it agree with the reference transcript on players, teams, actions, scores "
        "and the order of events, without contradicting it or inventing facts?\n"
        "The order in which the commentaries are shown and their length alone must not influence you.\n"
        "Reply with exactly one letter: A or B. No other words."
    ),
    "livesports": (
        "You compare two machine-generated commentaries of the same short event in a sports video. "
        "You also receive what the human commentator said during that event.\n"
        "Choose the commentary better aligned with the human commentary. Judge in this order of priority:\n"
        "1. Semantic alignment: does it describe the same actions, players, teams and outcome as the human "
        "commentator, without contradicting them or inventing facts?\n"
        "2. Only if both are equally aligned: whose style is closer to live human commentary?\n"
        "The order in which the commentaries are shown and their length alone must not influence you.\n"
        "Reply with exactly one letter: A or B. No other words."
    ),
}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r} (choose {' or '.join(PROTOCOLS)})")
    return protocol


def cap_candidate(text: str) -> str:
    text = text[:CANDIDATE_CHAR_LIMIT]
    return text if text.strip() else SILENT_CANDIDATE


def build_messages(reference: str, cand_a: str, cand_b: str, protocol: str) -> list[dict[str, str]]:
    """System + user chat messages for one comparison."""
    user = (
        f"Reference (human commentary):\n<reference>\n{reference}\n</reference>\n\n"
        f"Commentary A:\n<commentary_a>\n{cap_candidate(cand_a)}\n</commentary_a>\n\n"
        f"Commentary B:\n<commentary_b>\n{cap_candidate(cand_b)}\n</commentary_b>\n\n"
        "Which commentary is better, A or B?"
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[check_protocol(protocol)]},
        {"role": "user", "content": user},
    ]
