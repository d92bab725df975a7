"""Broadcast-style commentary for a simulated match: events -> varied lines -> per-word timestamps.

Every line is grounded in what the frames show at that moment:
* event lines start at (or shortly after) the event they describe, never before it is visible;
* "filler" lines describe the visible state (who has the ball, where, the score on the scoreboard) and are only
  used while that state holds for the whole line;
* memory lines ("that's the third corner for Red", "Blue's second of the afternoon", half-time statistics) only
  count things that happened earlier in the video;
* with `strict_event_words` (off by default), the words that name a goal, a save or a corner
  (`streaming_vlm.eval.grounding`'s patterns) are said only in the line of that event (and a goal's follow-up):
  memory, statistics and filler lines say "set piece", "scored",
  "corners", "saves" or "need to score" instead, so where such a word falls in the commentary is where the event is.
Quiet spells and the tail of the half-time break stay silent.

Scheduling is greedy by priority: the must-say lines (goals, kick-offs, half/full time) first, then set pieces,
then the run of play, then fillers in the remaining gaps. All times are handled in integer centiseconds so
rounding never makes two words overlap.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from .game import BLUE, RED, TEAM_NAMES, Game

_ONES = ("nil", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
        "twelve": "twelfth"}


def number_word(n: int, zero: str = "nil") -> str:
    """0 -> 'nil', 21 -> 'twenty-one', 105 -> 'one hundred five' (hyphenated compounds stay one word)."""
    n = int(n)
    if n == 0:
        return zero
    if n < 20:
        return _ONES[n]
    if n < 100:
        t, u = divmod(n, 10)
        return _TENS[t] + ("-" + _ONES[u] if u else "")
    h, rest = divmod(n, 100)
    return _ONES[h] + " hundred" + (" " + number_word(rest) if rest else "")


def ordinal_word(n: int) -> str:
    words = number_word(n).split(" ")
    last = words[-1]
    head, _, tail = last.rpartition("-")
    if tail in _ORD:
        tail = _ORD[tail]
    elif tail.endswith("y"):
        tail = tail[:-1] + "ieth"
    else:
        tail = tail + "th"
    words[-1] = (head + "-" if head else "") + tail
    return " ".join(words)


def count_word(n: int) -> str:
    return number_word(n, zero="no")


def plural(n: int, noun: str) -> str:
    """plural(1, 'corner') -> 'one corner', plural(0, 'shot') -> 'no shots'."""
    return f"{count_word(n)} {noun}" + ("" if n == 1 else "s")


def score_pair(a: int, b: int) -> str:
    """Leader's goals first: (2, 1) -> 'two one', (0, 0) -> 'nil nil', (1, 1) -> 'one all'."""
    hi, lo = max(a, b), min(a, b)
    if hi == lo:
        return "nil nil" if hi == 0 else f"{number_word(hi)} all"
    return f"{number_word(hi)} {number_word(lo)}"


def score_state(score: list[int], rng: np.random.Generator) -> str:
    r, b = score
    if r == b:
        if r == 0:
            return str(rng.choice(["it's still nil nil", "still goalless", "no goals yet"]))
        return str(rng.choice([f"it's {score_pair(r, b)}", f"level at {number_word(r)} apiece",
                               f"all square at {score_pair(r, b)}"]))
    lead = TEAM_NAMES[RED if r > b else BLUE]
    return str(rng.choice([f"{lead} lead {score_pair(r, b)}", f"it's {score_pair(r, b)} to {lead}",
                           f"{score_pair(r, b)} to {lead}"]))


_ZONE = {"defence": "in their own half", "midfield": "in midfield", "attack": "high up the pitch"}

# priority: 0 must say, 1 set pieces and chances, 2 turnovers and restarts, 3 run of play; 4 is fillers
_MAX_LAG = {0: 3.0, 1: 2.5, 2: 1.8, 3: 1.2}


class _Req:
    __slots__ = ("prio", "event_index", "earliest", "max_lag", "texts", "kind", "then")

    def __init__(self, prio, event_index, earliest, texts, kind="event", max_lag=None, then=None):
        self.prio = prio
        self.event_index = event_index
        self.earliest = earliest
        self.max_lag = _MAX_LAG[prio] if max_lag is None else max_lag
        self.texts = texts  # candidates, preferred first
        self.kind = kind
        self.then = then or []  # follow-up requests placed right after this line (same priority pass)


def _opp(team: str) -> str:
    return "Blue" if team == "Red" else "Red"


def _prog(team: str, pos) -> float:
    return float(pos[0]) if team == "Red" else 1.0 - float(pos[0])


def _side_words(pos) -> str | None:
    y = float(pos[1])
    return "far" if y < 0.3 else ("near" if y > 0.7 else None)


def _destinations(team: str, src, dst) -> list[str]:
    """Grounded phrases for where the ball went (src -> dst, normalised positions)."""
    O = _opp(team)
    p0, p1 = _prog(team, src), _prog(team, dst)
    out = []
    if p1 > 0.75:
        out += [f"towards the {O} box", "into the final third"]
    elif p1 > 0.5 and p0 <= 0.5:
        out += [f"into the {O} half"]
    elif 0.35 <= p1 <= 0.65 and not (0.35 <= p0 <= 0.65):
        out += ["into midfield"]
    elif p1 < 0.35 and p0 >= 0.35:
        out += ["back into their own half"]
    side = _side_words(dst)
    if side and _side_words(src) != side:
        out += [f"out to the {side} side"]
    return out


def _places(team: str, pos) -> list[str]:
    """Grounded phrases for where something is happening."""
    O = _opp(team)
    p = _prog(team, pos)
    if p < 0.3:
        out = ["deep in their own half"]
    elif p < 0.5:
        out = ["in their own half"]
    elif p < 0.72:
        out = [f"in the {O} half"]
    else:
        out = [f"near the {O} box", "in the final third"]
    if 0.35 <= p <= 0.65:
        out.append("in midfield")
    side = _side_words(pos)
    if side:
        out.append(f"on the {side} side")
    return out


def _with_tails(base: list[str], tails: list[str], rng: np.random.Generator, joiner: str = " ") -> list[str]:
    """Longer grounded variants first (most of the time), then the bare phrasings as fallbacks."""
    base = [b for b in base if b]
    if not tails or rng.random() < 0.1:
        return base
    order = rng.permutation(len(base))
    long = [base[j] + joiner + tails[int(rng.integers(0, len(tails)))] for j in order]
    return long[:2] + base


def _event_requests(i: int, ev: dict[str, Any], rng: np.random.Generator, ctx: dict[str, Any]) -> list[_Req]:
    """Candidate lines for one event (texts shuffled so the seed picks the phrasing)."""
    kind, T = ev["type"], ev.get("team")
    O = _opp(T) if T else None
    t = ev["t"]
    score = ev["score"]

    def pick(options, k=None):
        options = list(dict.fromkeys(o for o in options if o))
        order = rng.permutation(len(options))
        return [options[j] for j in order][: k or len(options)]

    reqs: list[_Req] = []
    if kind == "kickoff":
        if ev.get("after_goal"):
            trailing = score[0 if T == "Red" else 1] < score[1 if T == "Red" else 0]
            texts = [f"{T} restart from the centre", f"{T} kick off again", f"{T} get it going again",
                     f"back underway, {T} need a response" if trailing else "",
                     f"{T} kick off, {score_state(score, rng)}"]
        elif ev.get("half") == 2:
            texts = [f"we're back underway, {T} start the second half", f"second half, {T} kick us off",
                     f"{T} get the second half going", f"here we go again, {T} kick off"]
        else:
            texts = [f"and we're underway, {T} kick off", f"here we go, {T} get us started",
                     f"{T} kick off and we're up and running", f"the whistle goes and {T} get it going"]
        reqs.append(_Req(0, i, t, pick(texts)))
    elif kind == "pass":
        if ev.get("quiet"):
            return reqs
        if ev.get("outcome") == "out":
            texts = [f"{T} overhit it and it's out", "that's gone out of play", f"too heavy from {T}, out it goes",
                     f"{T} give it away, out of play"]
            reqs.append(_Req(2, i, t, pick(texts)))
            return reqs
        if ev.get("from_keeper"):
            texts = [f"the {T} keeper gets them going again", f"the {T} keeper sends it upfield",
                     f"long from the {T} keeper", f"the keeper finds a {T} shirt"]
        elif ev.get("to_keeper"):
            texts = [f"{T} go back to the keeper", f"back to the {T} keeper", f"{T} play it back to the keeper"]
        elif ev.get("switch"):
            texts = [f"{T} switch the play", f"{T} switch it across the pitch", f"a big diagonal from {T}"]
        elif ev.get("kind") == "throw":
            texts = [f"{T} take it short", f"quick throw from {T}", f"{T} throw it to a teammate"]
        elif ev.get("kind") == "back":
            texts = [f"{T} go backwards", f"{T} play it back", f"back it goes for {T}", f"{T} recycle it"]
        elif ev.get("kind") == "square":
            texts = [f"{T} play it square", f"{T} move it across", f"{T} knock it sideways", f"{T} keep it simple"]
        elif ev.get("long"):
            texts = [f"long ball from {T}", f"{T} go long", f"{T} hit it long", f"{T} launch it forward"]
        else:
            texts = [f"{T} knock it forward", f"lovely ball from {T}", f"{T} play it through",
                     f"{T} move it forward", f"nice pass from {T}", f"{T} find a teammate"]
        texts = pick(texts)
        if not ev.get("to_keeper"):
            texts = _with_tails(texts, _destinations(T, ev["pos"], ctx["end_pos"]), rng)
        reqs.append(_Req(3, i, t, texts))
    elif kind == "dribble":
        texts = [f"{T} carry it forward", f"{T} drive at the defence", f"{T} run with it", f"good run from {T}",
                 f"{T} on the ball, going forward"]
        dest = _destinations(T, ev["pos"], ctx["end_pos"]) or [
            p for p in _places(T, ctx["end_pos"]) if not p.startswith("deep")]
        reqs.append(_Req(3, i, t, _with_tails(pick(texts), dest, rng)))
    elif kind == "tackle":
        z = _ZONE.get(ev.get("zone"), "")
        texts = [f"{T} win it back {z}", f"good tackle from {T}", f"{T} nick it away",
                 f"{T} win the ball again" if ev.get("count", 0) >= 3 else ""]
        tails = [f"{T} on the ball now", f"and {T} can go again", f"{T} have possession"]
        reqs.append(_Req(2, i, t, _with_tails(pick(texts), tails, rng, joiner=", ") + [
            f"strong challenge, {T} have it"]))
    elif kind == "interception":
        texts = [f"cut out by {T}", f"{T} read that and intercept", f"intercepted, {T} take over",
                 f"{T} step in and cut it out"]
        tails = [p for p in _places(T, ev["pos"]) if p != "in midfield"]
        reqs.append(_Req(2, i, t, _with_tails(pick(texts), tails, rng)))
    elif kind == "foul":
        V = ev.get("victim") or O
        n = int(ev.get("count", 1))
        texts = [f"foul by {T}, free kick to {V}", f"{T} bring him down, that's a foul",
                 f"the referee blows, foul by {T}", f"that's a foul, free kick {V}"]
        if n >= 2:
            texts += [f"that's the {ordinal_word(n)} foul by {T}", f"another foul by {T}, their {ordinal_word(n)}"]
        if n >= 4:
            texts += [f"{T} giving away too many fouls"]
        where = [p for p in _places(V, ev["pos"]) if not p.startswith("deep")]
        if where and rng.random() < 0.7:
            w = where[int(rng.integers(0, len(where)))]
            texts = [f"foul by {T} {w}, free kick to {V}", f"{T} bring him down {w}, that's a foul"] + texts
            reqs.append(_Req(1, i, t, texts[:1] + pick(texts[1:])))
        else:
            reqs.append(_Req(1, i, t, pick(texts)))
    elif kind == "free_kick":
        if ev.get("direct"):
            texts = [f"{T} will have a go from here", f"free kick in shooting range for {T}",
                     f"{T} line up the free kick"]
        else:
            texts = [f"{T} take the free kick quickly", "the free kick is played forward", f"{T} get it going again"]
        reqs.append(_Req(2, i, t, pick(texts), max_lag=1.5))
    elif kind == "goal":
        s, o = score[0 if T == "Red" else 1], score[1 if T == "Red" else 0]
        pair = score_pair(s, o)
        lc = ev.get("lead_change")
        head = "GOAL!"
        if lc == "lead" and s == 1:
            texts = [f"GOAL! {T} take the lead, one nil", f"GOAL! {T} score, one nil to {T}",
                     f"it's in! {T} go one nil up"]
        elif lc == "lead":
            texts = [f"GOAL! {T} take the lead, {pair}", f"it's in! {T} lead {pair}",
                     f"GOAL! {T} go back in front, {pair}"]
        elif lc == "equaliser":
            texts = [f"GOAL! {T} draw level, {pair}", f"GOAL! level again at {number_word(s)} apiece",
                     f"it's in! {T} equalise, {pair}"]
        elif lc == "extend":
            texts = [f"GOAL! {T} extend the lead, {pair}", f"another for {T}, it's {pair}",
                     f"GOAL! {T} make it {pair}"]
        else:
            texts = [f"GOAL! {T} pull one back, {pair}", f"it's in! {T} reduce the deficit, {pair}",
                     f"GOAL! {T} make a game of it, {pair}"]
        if ev.get("header"):
            texts = [x.replace(head, "headed in!", 1) if x.startswith(head) else x for x in texts]
        n = int(ev.get("count", 1))
        strict = ctx.get("strict")
        follow = [f"{T}'s {ordinal_word(n)} of the afternoon", "" if strict else f"that's {T}'s {ordinal_word(n)} goal",
                  f"the {O} keeper had no chance", f"what a finish from {T}"]
        follow = [x for x in follow if x]
        if n == 1:
            follow += [f"{T} are off the mark" if strict else f"a first goal for {T}"]
        else:
            follow += [f"{T} have {count_word(n)} now"]
        if ev.get("header"):
            follow += [f"a fine header from {T}"]
        if ctx.get("from_corner"):
            follow += (["and that came from the set piece", f"the set piece pays off for {T}"] if strict else
                       ["and that came from a corner", f"the corner pays off for {T}"])
        if ev.get("free_kick"):
            follow += ["straight in from the free kick", f"what a free kick from {T}"]
        shots = ctx["shots"].get(T, 0)
        if shots >= 3:
            follow += [f"that's from {T}'s {ordinal_word(shots)} shot"]
        reqs.append(_Req(0, i, t, pick(texts), then=[
            _Req(1, i, t + 1.0, pick(follow), kind="followup", max_lag=4.0)]))
    elif kind == "save":
        S = ev.get("shooter") or O
        n = int(ev.get("count", 1))
        if ev.get("deflected"):
            texts = [f"shot! the {T} keeper pushes it behind", f"great save, the {T} keeper turns it wide",
                     f"{S} shoot, tipped away by the keeper"]
        elif ev.get("header"):
            texts = [f"header! saved by the {T} keeper", f"{S} head it, the {T} keeper holds on",
                     f"a header, straight at the {T} keeper"]
        else:
            texts = [f"shot! saved by the {T} keeper", f"{S} shoot, and the {T} keeper gathers",
                     f"good stop from the {T} keeper", f"{S} try their luck, straight at the keeper"]
        follow = []
        if n >= 2:
            follow += ([] if ctx.get("strict") else [f"that's the {ordinal_word(n)} save from the {T} keeper"]) + [
                f"the {T} keeper is busy today"]
        shots = ctx["shots"].get(S, 0)
        if shots >= 2:
            follow += [f"{S} have had {count_word(shots)} shots now", f"{S}'s {ordinal_word(shots)} attempt"]
        then = []
        if follow and rng.random() < 0.6:
            then = [_Req(2, i, t + 1.0, pick(follow), kind="followup", max_lag=2.5)]
        reqs.append(_Req(1, i, t, pick(texts), then=then))
    elif kind == "miss":
        if ev.get("header"):
            texts = [f"header from {T}, but it's wide", f"{T} head it wide", f"a header from {T}, off target"]
        else:
            texts = [f"{T} shoot, and it's wide", f"wide of the post from {T}", f"{T} try their luck, just wide",
                     f"off target from {T}", f"{T} pull it wide"]
        reqs.append(_Req(1, i, t, pick(texts)))
    elif kind == "goal_kick":
        texts = [f"goal kick to {T}", f"the {T} keeper to take the goal kick", f"the {T} keeper will restart"]
        reqs.append(_Req(2, i, t, pick(texts), max_lag=1.5))
    elif kind == "corner":
        n = int(ev.get("count", 1))
        side = ev.get("side", "far")
        texts = [f"corner to {T}", f"{T} win a corner on the {side} side", f"corner {T}, on the {side} side"]
        if n >= 2:
            texts += [f"that's the {ordinal_word(n)} corner for {T}", f"another corner for {T}, their {ordinal_word(n)}"]
        reqs.append(_Req(1, i, t, pick(texts)))
    elif kind == "cross":
        texts = ["the corner is swung in", "in comes the corner", f"{T} whip it in", "cross into the box"]
        reqs.append(_Req(2, i, t, pick(texts), max_lag=0.6))
    elif kind == "clearance":
        texts = [f"cleared by {T}", f"{T} head it clear", f"{T} get it away"]
        reqs.append(_Req(2, i, t, pick(texts)))
    elif kind == "throw_in":
        side = ev.get("side", "far")
        n = int(ev.get("count", 1))
        texts = [f"throw-in to {T} on the {side} side", f"{T} have a throw", f"throw to {T}",
                 f"another throw for {T}" if n >= 2 else ""]
        reqs.append(_Req(1, i, t, pick(texts)))
    elif kind in ("half_time", "full_time"):
        st = ev.get("stats", {})
        r, b = score
        if kind == "half_time":
            if r == b:
                first = [f"that's half-time, {score_pair(r, b)}", f"half-time, and it's {score_pair(r, b)}",
                         "the referee blows for half-time, " + score_state(score, rng)]
            else:
                lead = "Red" if r > b else "Blue"
                first = [f"that's half-time, {lead} lead {score_pair(r, b)}",
                         f"half-time, {score_pair(r, b)} to {lead}",
                         f"the referee blows for half-time, {lead} ahead"]
        else:
            if r == b:
                first = [f"and that's full time, it ends {score_pair(r, b)}", f"full time, {score_pair(r, b)}"]
            else:
                win = "Red" if r > b else "Blue"
                first = [f"and that's full time, {win} win {score_pair(r, b)}", f"full time, {win} win it",
                         f"it's all over, {win} win {score_pair(r, b)}"]
        stats = []
        cr, cb = st.get("corner", [0, 0])
        sr, sb = st.get("shot", [0, 0])
        fr, fb = st.get("foul", [0, 0])
        stats.append(f"{plural(sr, 'shot')} for Red, {number_word(sb, 'none')} for Blue")
        if cr + cb:
            stats.append(f"corners, Red {number_word(cr, 'none')} and Blue {number_word(cb, 'none')}"
                         if ctx.get("strict") else f"Red had {plural(cr, 'corner')}, Blue {number_word(cb, 'none')}")
        if fr + fb:
            stats.append(f"{plural(fr, 'foul')} by Red and {number_word(fb, 'none')} by Blue")
        gr, gb = st.get("goal", [0, 0])
        if gr + gb == 0:
            stats.append("no goals for either side so far" if kind == "half_time" else "no goals at all")
        else:
            stats.append(f"Red scored {number_word(gr, 'none')}, Blue {number_word(gb, 'none')}"
                         if ctx.get("strict") else f"{plural(gr, 'goal')} for Red, {number_word(gb, 'none')} for Blue")
        vr, vb = st.get("save", [0, 0])
        if vr + vb:
            stats.append(f"saves, the Red keeper {number_word(vr, 'none')} and the Blue keeper "
                         f"{number_word(vb, 'none')}" if ctx.get("strict") else
                         f"the Red keeper made {plural(vr, 'save')}, the Blue keeper {number_word(vb, 'none')}")
        order = list(rng.permutation(len(stats)))
        chain = [_Req(0, i, t + 0.5, [stats[j]], kind="followup", max_lag=2.0) for j in order]
        # chain the stats after the first line, each right after the previous
        head_req = _Req(0, i, t, pick(first), then=chain)
        reqs.append(head_req)
    return reqs


class _Timeline:
    """Non-overlapping occupied intervals (centiseconds), sorted by start."""

    def __init__(self, limit: int, blocked: list[tuple[int, int]]):
        self.limit = limit
        self.starts: list[int] = []
        self.ends: list[int] = []
        merged: list[list[int]] = []
        for a, b in sorted(blocked):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for a, b in merged:
            self.starts.append(a)
            self.ends.append(b)

    def find(self, earliest: int, dur: int, latest: int, gap: int) -> int | None:
        s = max(earliest, 0)
        j = max(bisect.bisect_right(self.starts, s) - 1, 0)
        while j < len(self.starts):
            a, b = self.starts[j], self.ends[j]
            if b + gap <= s:
                j += 1
                continue
            if s + dur + gap <= a:
                break
            s = max(s, b + gap)
            j += 1
            if s > latest:
                return None
        if s > latest or s + dur > self.limit:
            return None
        return s

    def add(self, a: int, b: int) -> None:
        j = bisect.bisect_left(self.starts, a)
        self.starts.insert(j, a)
        self.ends.insert(j, b)

    def gaps(self, lo: int, hi: int):
        """Free stretches [g0, g1) between occupied intervals inside [lo, hi]."""
        prev = lo
        for a, b in zip(list(self.starts), list(self.ends)):
            if b <= lo:
                continue
            if a >= hi:
                break
            if a > prev:
                yield prev, a
            prev = max(prev, b)
        if prev < hi:
            yield prev, hi


def _word_durations(words: list[str], rate: float) -> list[int]:
    out = []
    for w in words:
        letters = sum(ch.isalnum() for ch in w)
        if w.isupper() and len(w) > 2:
            d = 0.6
        else:
            d = min(max(0.19 + 0.031 * letters, 0.26), 0.5)
        if w.endswith((",", "!")):
            d += 0.04
        out.append(max(int(round(100 * d * rate)), 20))
    return out


class _Filler:
    def __init__(self, game: Game, rng: np.random.Generator, events: list[dict[str, Any]], strict: bool = False):
        self.g = game
        self.strict = strict
        self.rng = rng
        self.ev_t = [e["t"] for e in events]
        self.events = events
        self.last_template = ""
        self._build_snapshots()

    def _state(self, t: float):
        i = self.g.frame_at(t)
        return int(self.g.possession[i]), self.g.ball[i], [int(v) for v in self.g.score[i]]

    def _stats_until(self, t: float) -> dict[tuple[str, str], int]:
        """Per (event type, team) counts of the events at or before t."""
        j = bisect.bisect_right(self.ev_t, t)
        return self._snapshots[j - 1] if j > 0 else {}

    def _build_snapshots(self) -> None:
        running: dict[tuple[str, str], int] = {}
        self._snapshots = []
        for e in self.events:
            if e.get("count") is not None and e.get("team") and e["type"] in ("corner", "shot", "save"):
                running = dict(running)
                running[(e["type"], e["team"])] = int(e["count"])
            self._snapshots.append(running)

    def candidates(self, t0: float, t1: float) -> list[tuple[str, str]]:
        """(template id, text) options true over [t0, t1], shuffled."""
        p0, b0, sc0 = self._state(t0)
        p1, b1, sc1 = self._state(t1)
        rng = self.rng
        out: list[tuple[str, str]] = []
        if sc0 == sc1:
            out.append(("score", score_state(sc0, rng)))
            r, b = sc0
            if r != b:
                lead, trail = ("Red", "Blue") if r > b else ("Blue", "Red")
                out += [("lead", f"{lead} still in front"),
                        ("trail", f"{trail} need to score" if self.strict else f"{trail} need a goal"),
                        ("trail2", f"{trail} chasing the game")]
        if p0 >= 0 and p0 == p1 and not self.g.hidden[self.g.frame_at(t0)]:
            T = TEAM_NAMES[p0]
            O = TEAM_NAMES[1 - p0]
            prog = b0[0] if p0 == RED else 1 - b0[0]
            out += [("poss", f"{T} in possession"), ("poss2", f"{T} keep the ball"), ("short", f"{T} again"),
                    ("short2", f"still {T}"), ("short3", f"{T} on it"),
                    ("poss3", f"{T} with the ball now"), ("poss4", f"patient from {T}"),
                    ("poss5", f"{T} knocking it about")]
            if prog < 0.35:
                out += [("back", f"{T} playing it out from the back"), ("back2", f"{T} building from deep")]
            elif prog < 0.65:
                out += [("mid", f"{T} keeping it in midfield"), ("mid2", f"{T} working it through midfield")]
            else:
                out += [("att", f"{T} pushing forward"), ("att2", f"{T} looking for an opening"),
                        ("att3", f"{T} camped in the {O} half"), ("att4", f"{T} on the attack")]
            if b0[1] < 0.3 and b1[1] < 0.3:
                out += [("far", f"{T} working it down the far side")]
            elif b0[1] > 0.7 and b1[1] > 0.7:
                out += [("near", f"{T} coming down the near side")]
        stats = self._stats_until(t0)
        for T in ("Red", "Blue"):
            n = stats.get(("corner", T), 0)
            if n >= 2:
                out.append((f"corners{T}", f"{T} have had {count_word(n)} corners"))
            n = stats.get(("shot", T), 0)
            if n >= 2:
                out.append((f"shots{T}", f"{count_word(n)} shots for {T} so far"))
            n = stats.get(("save", T), 0)
            if n >= 2:
                out.append((f"saves{T}", f"the {T} keeper has made {count_word(n)} saves"))
        order = rng.permutation(len(out))
        res = [out[j] for j in order]
        # avoid saying the same kind of thing twice in a row, and prefer describing play over stats
        res.sort(key=lambda kv: (kv[0] == self.last_template, kv[0].startswith(("corners", "shots", "saves"))
                                 and rng.random() < 0.7))
        return res


def build_commentary(game: Game, seed: int | None = None, strict_event_words: bool = False) -> list[dict[str, Any]]:
    """Lines with per-word timings for a simulated game, sorted by start time. `strict_event_words`: the module
    docstring."""
    rng = np.random.default_rng([game.seed if seed is None else seed, 1])
    events = game.events
    cs = lambda x: int(round(float(x) * 100))  # noqa: E731
    limit = min(int(np.floor(game.duration * 100)), int(np.floor(game.n_frames / game.fps * 100)))

    blocked: list[tuple[int, int]] = [(cs(a), cs(b)) for a, b in game.silences]
    filler_blocked = list(blocked)
    ft_t = game.duration
    first_t = events[0]["t"] if events else 0.0
    for ev in events:
        if ev["type"] == "half_time":
            brk = ev["end"] - ev["t"]
            talk = max(brk - 4.0, 0.6 * brk)
            blocked.append((cs(ev["t"] + talk), cs(ev["end"])))
            filler_blocked.append((cs(ev["t"]), cs(ev["end"])))
        if ev["type"] == "full_time":
            ft_t = ev["t"]
    tl = _Timeline(limit, blocked)

    # requests, with a little memory context (shots so far, whether a goal came from a corner)
    shots: dict[str, int] = {}
    reqs: list[_Req] = []
    last_corner_t = {"Red": -1e9, "Blue": -1e9}
    for i, ev in enumerate(events):
        if ev["type"] == "shot" and ev.get("team"):
            shots[ev["team"]] = int(ev.get("count", shots.get(ev["team"], 0) + 1))
        if ev["type"] == "corner":
            last_corner_t[ev["team"]] = ev["t"]
        ctx = {"shots": dict(shots), "end_pos": game.ball[game.frame_at(ev["end"])],
               "from_corner": ev["type"] == "goal" and ev["t"] - last_corner_t.get(ev["team"] or "", -1e9) < 8.0,
               "strict": bool(strict_event_words)}
        reqs.extend(_event_requests(i, ev, rng, ctx))

    placed: list[dict[str, Any]] = []

    def place(req: _Req, gap_cs: int) -> dict[str, Any] | None:
        delay = float(rng.uniform(0.1, 0.35))
        earliest = cs(req.earliest + delay)
        latest = cs(req.earliest + delay + req.max_lag)
        rate = float(rng.uniform(0.92, 1.08))
        # the preferred phrasing first; fall back to the others (in order) when it does not fit
        options = list(req.texts)
        for text in options:
            words = text.split()
            durs = _word_durations(words, rate)
            start = tl.find(earliest, sum(durs), latest, gap_cs)
            if start is None:
                continue
            t = start
            timed = []
            for w, d in zip(words, durs):
                timed.append([t, t + d, w])
                t += d
            tl.add(start, t)
            line = {"start": start, "end": t, "text": text, "event_index": req.event_index, "kind": req.kind,
                    "words": timed}
            placed.append(line)
            return line
        return None

    for prio in (0, 1, 2, 3):
        for req in sorted((r for r in reqs if r.prio == prio), key=lambda r: r.earliest):
            line = place(req, gap_cs=int(rng.integers(12, 30)))
            if line is None:
                continue
            prev_end = line["end"]
            for fol in req.then:
                fol.earliest = max(fol.earliest, prev_end / 100.0)
                if fol.prio == prio:
                    got = place(fol, gap_cs=int(rng.integers(15, 35)))
                    if got is not None:
                        prev_end = got["end"]
                else:
                    reqs.append(fol)

    # fillers: describe the visible state in the remaining gaps of open play
    filler = _Filler(game, rng, events, strict=bool(strict_event_words))
    fb = _Timeline(limit, filler_blocked)
    ev_t = [e["t"] for e in events]
    lo, hi = cs(first_t + 0.5), cs(ft_t)
    for g0, g1 in list(tl.gaps(lo, hi)):
        s = g0 + int(rng.integers(18, 45))
        while True:
            if g1 - s < 80:
                break
            opts = filler.candidates(s / 100.0, min(g1, s + 250) / 100.0)
            rate = float(rng.uniform(0.92, 1.08))
            done = False
            for tid, text in opts:
                words = text.split()
                durs = _word_durations(words, rate)
                dur = sum(durs)
                if s + dur + 15 > g1:
                    continue
                if fb.find(s, dur, s, 0) is None:
                    continue
                # re-check the state over the exact span of this line
                if not any(tid == k for k, _ in filler.candidates(s / 100.0, (s + dur) / 100.0)):
                    continue
                t = s
                timed = []
                for w, d in zip(words, durs):
                    timed.append([t, t + d, w])
                    t += d
                tl.add(s, t)
                j = max(bisect.bisect_right(ev_t, s / 100.0) - 1, 0)
                placed.append({"start": s, "end": t, "text": text, "event_index": j, "kind": "filler",
                               "words": timed})
                filler.last_template = tid
                s = t + int(rng.integers(15, 40))
                done = True
                break
            if not done:
                break

    placed.sort(key=lambda ln: ln["start"])
    out = []
    for ln in placed:
        out.append({
            "start": ln["start"] / 100.0, "end": ln["end"] / 100.0, "text": ln["text"],
            "event_index": int(ln["event_index"]), "kind": ln["kind"],
            "words": [[a / 100.0, b / 100.0, w] for a, b, w in ln["words"]],
        })
    return out


def words_of(lines: list[dict[str, Any]]) -> list[list]:
    """All timed words [start, end, word] of a commentary, in time order."""
    return [w for ln in lines for w in ln["words"]]
