"""Scripted football match: a seed -> an event log and per-frame positions of the ball and the players.

Everything here lives in normalised pitch coordinates: x in [0, 1] runs from the left goal line to the right goal
line, y in [0, 1] from the far (top) touchline to the near (bottom) one. Red always attacks to the right (x -> 1),
Blue to the left; sides do not swap at half-time. `render.Layout` maps these coordinates to pixels.

The match is scripted action by action (pass, dribble, tackle, shot, ...) by `_Planner`, which lays down
* ball keyframes (the ball moves linearly between them),
* "pins": intervals in which a player holds the ball (his dot sits right behind it), so a receiver runs to the
  point where a pass arrives and a tackler runs at the ball carrier,
* events (what happened when, for the commentary and the event log),
* visual marks: goal flashes, foul squares, the hidden half-time break, and the broadcast's event captions (a
  coloured band across the bottom of the picture for `CAPTION_S` seconds after each goal, save and corner).
`simulate()` then turns this script into per-frame arrays. The result is fully determined by the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RED, BLUE = 0, 1
TEAM_NAMES = ("Red", "Blue")
N_OUTFIELD = 5
PER_TEAM = N_OUTFIELD + 1
N_PLAYERS = 2 * PER_TEAM
# Player p: team PLAYER_TEAM[p]; the last player of each team is its keeper.
PLAYER_TEAM = np.array([RED] * PER_TEAM + [BLUE] * PER_TEAM, dtype=np.int8)
PLAYER_KEEPER = np.array(([False] * N_OUTFIELD + [True]) * 2)
# Home positions of the outfield players (2-1-2) as seen by a team attacking to the right; Blue's are mirrored in x.
# The forwards of the two teams use different lanes so they do not stand on each other at kick-off.
_HOME = np.array([[(0.17, 0.28), (0.17, 0.72), (0.34, 0.5), (0.49, 0.24), (0.49, 0.76)],
                  [(0.17, 0.3), (0.17, 0.7), (0.34, 0.5), (0.49, 0.38), (0.49, 0.62)]])
GOAL_Y = (0.38, 0.62)  # goal mouth, as a y range
KEEPER_X = (0.035, 0.965)  # keeper line of Red (left goal) and Blue (right goal)
PIN_OFFSET = 0.028  # a ball carrier stands this far behind the ball (along his attacking direction)
CAPTION_S = 2.5  # seconds an event caption stays on screen
# caption codes: CAPTION_CODES[type] + team (0 Red, 1 Blue); -1 none
CAPTION_CODES = {"goal": 0, "save": 2, "corner": 4}
MIN_DURATION = 10.0  # seconds: a kick-off plus a few passes and the final whistle
RAMP_IN, RAMP_OUT = 1.2, 1.0  # seconds a player takes to run to / drift away from a pinned point

EVENT_TYPES = (
    "kickoff", "pass", "dribble", "tackle", "interception", "foul", "free_kick", "shot", "save", "goal", "miss",
    "goal_kick", "corner", "cross", "clearance", "throw_in", "quiet", "half_time", "full_time",
)


# events after which the commentary needs a few seconds: no quiet spell starts right after them
_MAJOR = frozenset({"kickoff", "goal", "save", "miss", "corner", "foul", "free_kick", "throw_in", "goal_kick"})


def attack_dir(team: int) -> float:
    return 1.0 if team == RED else -1.0


def outfield(team: int) -> list[int]:
    return list(range(team * PER_TEAM, team * PER_TEAM + N_OUTFIELD))


def keeper(team: int) -> int:
    return team * PER_TEAM + N_OUTFIELD


def progress(team: int, x: float) -> float:
    """How far up the pitch x is for `team` (0 = own goal line, 1 = the opponent's)."""
    return x if team == RED else 1.0 - x


def base_positions(bx: np.ndarray, by: np.ndarray, poss: np.ndarray) -> np.ndarray:
    """Formation positions (N, P, 2) given the (smoothed) ball position and possession signal.

    poss is in [-1, 1]: +1 Red in possession, -1 Blue, 0 nobody. Teams slide towards the ball and push up when
    they have it.
    """
    bx, by, poss = np.atleast_1d(bx), np.atleast_1d(by), np.atleast_1d(poss)
    out = np.empty((bx.shape[0], N_PLAYERS, 2))
    for p in range(N_PLAYERS):
        team = int(PLAYER_TEAM[p])
        d = attack_dir(team)
        own = poss * d  # +1 when this team has the ball
        if PLAYER_KEEPER[p]:
            out[:, p, 0] = KEEPER_X[team]
            out[:, p, 1] = np.clip(0.5 + 0.45 * (by - 0.5), GOAL_Y[0] + 0.02, GOAL_Y[1] - 0.02)
            continue
        hx, hy = _HOME[team, p % PER_TEAM]
        hx = hx if team == RED else 1.0 - hx
        out[:, p, 0] = np.clip(hx + 0.5 * (bx - 0.5) + 0.06 * d * own, 0.05, 0.95)
        out[:, p, 1] = np.clip(hy + 0.3 * (by - 0.5), 0.06, 0.94)
    return out


@dataclass
class Game:
    """A simulated match. Positions are normalised pitch coordinates; frame i is at time i / fps."""

    seed: int
    duration: float
    fps: float
    events: list[dict[str, Any]]
    ball: np.ndarray  # (N, 2)
    players: np.ndarray  # (N, P, 2)
    ball_visible: np.ndarray  # (N,) bool
    players_visible: np.ndarray  # (N,) bool
    possession: np.ndarray  # (N,) int8: 0 Red, 1 Blue, -1 nobody (ball in flight between teams, dead ball)
    score: np.ndarray  # (N, 2) int16: the score shown on the scoreboard
    flash: np.ndarray  # (N,) int8: team whose goal is being celebrated (flash at the goal it scored in), -1 none
    foul_mark: np.ndarray  # (N, 2) position of the foul square, NaN when none
    hidden: np.ndarray  # (N,) bool: half-time break (darkened pitch, nobody on it)
    caption: np.ndarray  # (N,) int8: the event caption on screen (CAPTION_CODES[type] + team), -1 none
    silences: list[tuple[float, float]] = field(default_factory=list)  # quiet spells: no commentary inside

    @property
    def n_frames(self) -> int:
        return int(self.ball.shape[0])

    def frame_at(self, t: float) -> int:
        return int(min(max(round(t * self.fps), 0), self.n_frames - 1))


class _Planner:
    def __init__(self, rng: np.random.Generator, duration: float, event_rate: float = 1.0):
        self.rng = rng
        self.event_rate = float(event_rate)
        self.duration = duration
        self.t = 0.0
        self.ball = (0.5, 0.5)
        self.kf: list[tuple[float, float, float]] = [(0.0, 0.5, 0.5)]
        self.pins: list[tuple[int, float, float]] = []
        self.poss: list[tuple[float, int]] = [(0.0, -1)]
        self.team = -1
        self.holder: int | None = None
        self.hold_start = 0.0
        self.events: list[dict[str, Any]] = []
        self.score = [0, 0]
        self.counts: dict[tuple[str, int], int] = {}
        self.flashes: list[tuple[float, float, int]] = []
        self.fouls: list[tuple[float, float, float, float]] = []
        self.hidden: list[tuple[float, float]] = []
        self.silences: list[tuple[float, float]] = []
        self.next_quiet = float(rng.uniform(18.0, 35.0))
        self.half = 1
        self.last_major = 0.0
        self.phase_end = duration

    # ---------------------------------------------------------------- primitives
    def _ball_to(self, xy: tuple[float, float], dur: float) -> None:
        dur = max(float(dur), 0.02)
        self.t += dur
        self.ball = (float(xy[0]), float(xy[1]))
        self.kf.append((self.t, self.ball[0], self.ball[1]))

    def _wait(self, dur: float) -> None:
        self._ball_to(self.ball, dur)

    def _set_poss(self, team: int) -> None:
        self.team = team
        self.poss.append((self.t, team))

    def _take(self, p: int) -> None:
        self._release()
        self.holder = p
        self.hold_start = self.t
        self._set_poss(int(PLAYER_TEAM[p]))

    def _release(self) -> None:
        if self.holder is not None:
            self.pins.append((self.holder, self.hold_start, self.t))
            self.holder = None

    def _hold(self, dur: float, forward: float = 0.0, dy: float = 0.0) -> None:
        d = attack_dir(self.team) if self.team >= 0 else 0.0
        x = float(np.clip(self.ball[0] + d * forward, 0.05, 0.95))
        y = float(np.clip(self.ball[1] + dy, 0.06, 0.94))
        self._ball_to((x, y), dur)

    def _count(self, kind: str, team: int) -> int:
        self.counts[(kind, team)] = self.counts.get((kind, team), 0) + 1
        return self.counts[(kind, team)]

    def _event(self, etype: str, team: int | None, **extra: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "t": round(self.t, 3),
            "end": round(self.t, 3),
            "type": etype,
            "team": TEAM_NAMES[team] if team is not None and team >= 0 else None,
            "score": list(self.score),
            "pos": [round(self.ball[0], 4), round(self.ball[1], 4)],
        }
        ev.update(extra)
        self.events.append(ev)
        if etype in _MAJOR:
            self.last_major = self.t
        return ev

    def _approx(self, p: int) -> np.ndarray:
        poss = 0.0 if self.team < 0 else attack_dir(self.team)
        return base_positions(np.array([self.ball[0]]), np.array([self.ball[1]]), np.array([poss]))[0, p]

    def _nearest(self, team: int, xy=None, keepers: bool = False) -> int:
        xy = np.asarray(self.ball if xy is None else xy)
        cands = outfield(team) + ([keeper(team)] if keepers else [])
        dists = [float(np.sum((self._approx(p) - xy) ** 2)) for p in cands]
        return cands[int(np.argmin(dists))]

    def _pitch_clip(self, xy) -> tuple[float, float]:
        return float(np.clip(xy[0], 0.05, 0.95)), float(np.clip(xy[1], 0.06, 0.94))

    def _flight(self, src, dst, per_unit: float = 1.5, base: float = 0.35, lo: float = 0.45, hi: float = 1.6) -> float:
        dist = float(np.hypot(dst[0] - src[0], 0.65 * (dst[1] - src[1])))
        return float(np.clip(base + per_unit * dist, lo, hi))

    # ---------------------------------------------------------------- actions
    def kickoff(self, team: int, half: int, after_goal: bool = False) -> None:
        self._release()
        self._ball_to((0.5, 0.5), 0.02)
        kicker = outfield(team)[3 + int(self.rng.integers(0, 2))]
        self._take(kicker)
        self._wait(0.6)
        self._event("kickoff", team, half=half, after_goal=after_goal)
        mid = outfield(team)[2]
        self.pass_to(mid, self._pitch_clip(self._approx(mid) + [attack_dir(team) * PIN_OFFSET, 0.0]), kind="back")

    def pass_to(self, receiver: int, target, kind: str = "forward", quiet: bool = False,
                from_keeper: bool = False) -> dict[str, Any]:
        team = self.team
        src = self.ball
        dist = float(np.hypot(target[0] - src[0], 0.65 * (target[1] - src[1])))
        extra: dict[str, Any] = {"kind": kind, "long": dist > 0.32}
        if quiet:
            extra["quiet"] = True
        if from_keeper:
            extra["from_keeper"] = True
        if PLAYER_KEEPER[receiver]:
            extra["to_keeper"] = True
        if abs(target[1] - src[1]) > 0.38:
            extra["switch"] = True
        ev = self._event("pass", team, **extra)
        self._release()
        self._ball_to(target, self._flight(src, target))
        self._take(receiver)
        ev["end"] = round(self.t, 3)
        self._hold(float(self.rng.uniform(0.4, 0.9)), forward=float(self.rng.uniform(0.0, 0.02)))
        return ev

    def _choose_receiver(self, kind: str, allow_keeper: bool = False, zone=None) -> tuple[int, tuple[float, float]]:
        team = self.team
        d = attack_dir(team)
        cands = [p for p in outfield(team) if p != self.holder]
        if allow_keeper:
            cands.append(keeper(team))
        bx = progress(team, self.ball[0])
        weights, targets = [], []
        for p in cands:
            pos = self._approx(p).copy()
            if kind == "forward" and not PLAYER_KEEPER[p]:
                pos[0] += d * float(self.rng.uniform(0.05, 0.16))
            pos += self.rng.normal(0.0, 0.02, size=2)
            pos = np.array(self._pitch_clip(pos + [d * PIN_OFFSET, 0.0]))
            gain = progress(team, pos[0]) - bx
            if kind == "forward":
                w = np.exp(6.0 * gain)
            elif kind == "back":
                w = np.exp(-6.0 * gain)
            else:  # square: similar x
                w = np.exp(-12.0 * abs(gain))
            if zone is not None and not (zone[0] <= pos[0] <= zone[1]):
                w *= 0.02
            weights.append(w)
            targets.append(pos)
        w = np.asarray(weights)
        i = int(self.rng.choice(len(cands), p=w / w.sum()))
        return cands[i], (float(targets[i][0]), float(targets[i][1]))

    def pass_play(self, kind: str, quiet: bool = False, zone=None) -> None:
        bx = progress(self.team, self.ball[0])
        r, tgt = self._choose_receiver(kind, allow_keeper=(kind == "back" and bx < 0.35 and not quiet), zone=zone)
        self.pass_to(r, tgt, kind=kind, quiet=quiet)

    def dribble(self) -> None:
        ev = self._event("dribble", self.team)
        self._hold(float(self.rng.uniform(1.6, 2.5)), forward=float(self.rng.uniform(0.06, 0.13)),
                   dy=float(self.rng.normal(0.0, 0.04)))
        ev["end"] = round(self.t, 3)

    def tackle(self) -> None:
        self._hold(float(self.rng.uniform(0.8, 1.3)), forward=float(self.rng.uniform(0.02, 0.05)))
        opp = 1 - self.team
        o = self._nearest(opp)
        self._take(o)
        n = self._count("tackle", opp)
        self._event("tackle", opp, count=n, zone=_zone(opp, self.ball[0]))
        self._hold(float(self.rng.uniform(0.5, 0.9)))

    def interception(self) -> None:
        team = self.team
        _, tgt = self._choose_receiver("forward")
        mid = ((self.ball[0] + tgt[0]) / 2, (self.ball[1] + tgt[1]) / 2)
        opp = 1 - team
        o = self._nearest(opp, mid)
        pos = self._approx(o)
        point = self._pitch_clip(pos + [attack_dir(opp) * PIN_OFFSET, 0.0])
        ev = self._event("pass", team, kind="forward", long=False, outcome="intercepted")
        src = self.ball
        self._release()
        self._ball_to(point, self._flight(src, point))
        ev["end"] = round(self.t, 3)
        self._take(o)
        n = self._count("interception", opp)
        self._event("interception", opp, count=n, zone=_zone(opp, self.ball[0]))
        self._hold(float(self.rng.uniform(0.5, 0.9)))

    def foul(self, rem: float) -> None:
        victim = self.team
        self._hold(float(self.rng.uniform(0.6, 1.0)), forward=0.03)
        opp = 1 - victim
        o = self._nearest(opp)
        n = self._count("foul", opp)
        self._event("foul", opp, count=n, victim=TEAM_NAMES[victim], zone=_zone(victim, self.ball[0]))
        self.pins.append((o, self.t, self.t + 1.0))
        self.fouls.append((self.t, self.t + 2.0, self.ball[0], self.ball[1]))
        self._wait(float(self.rng.uniform(2.6, 3.2)))
        bx = progress(victim, self.ball[0])
        direct = bx > 0.68 and self.rng.random() < 0.6 and self.phase_end - self.t > 12.0
        self._event("free_kick", victim, direct=bool(direct))
        if direct:
            self.shot(self.phase_end - self.t, free_kick=True)
        else:
            r, tgt = self._choose_receiver("forward")
            self.pass_to(r, tgt, kind="forward")

    def ball_out(self) -> None:
        """A stray pass over the touchline, then a throw-in for the other side."""
        team = self.team
        side = 0 if self.ball[1] < 0.5 else 1
        d = attack_dir(team)
        out_pt = (float(np.clip(self.ball[0] + d * self.rng.uniform(0.05, 0.15), 0.08, 0.92)), -0.03 if side == 0 else 1.03)
        ev = self._event("pass", team, kind="forward", long=False, outcome="out")
        src = self.ball
        self._release()
        self._ball_to(out_pt, self._flight(src, out_pt))
        ev["end"] = round(self.t, 3)
        self._set_poss(-1)
        self._wait(0.3)
        line_pt = (out_pt[0], 0.0 if side == 0 else 1.0)
        self._ball_to(line_pt, 0.9)
        opp = 1 - team
        thrower = self._nearest(opp, line_pt)
        self._take(thrower)
        n = self._count("throw_in", opp)
        self._event("throw_in", opp, count=n, side=_side(line_pt[1]), zone=_zone(opp, line_pt[0]))
        self._wait(float(self.rng.uniform(1.3, 1.8)))
        r, tgt = self._choose_receiver("square")
        self.pass_to(r, tgt, kind="throw")

    def shot(self, rem: float = 99.0, free_kick: bool = False, header: bool = False,
             outcome: str | None = None) -> None:
        team = self.team
        opp = 1 - team
        d = attack_dir(team)
        goal_x = 1.0 if team == RED else 0.0
        if outcome is None:
            probs = [0.36, 0.3, 0.18, 0.16 if rem >= 20.0 else 0.0]
            outcome = str(self.rng.choice(["goal", "save", "wide", "corner"], p=np.array(probs) / sum(probs)))
        n = self._count("shot", team)
        ev = self._event("shot", team, outcome=outcome, count=n, header=header, free_kick=free_kick,
                         dist=round(abs(goal_x - self.ball[0]), 3))
        src = self.ball
        self._release()
        self._set_poss(-1)
        k = keeper(opp)
        if outcome == "goal":
            gy = float(self.rng.uniform(GOAL_Y[0] + 0.04, GOAL_Y[1] - 0.04))
            tgt = (goal_x + d * 0.025, gy)
            self._ball_to(tgt, self._flight(src, tgt, per_unit=0.9, base=0.3, lo=0.4, hi=1.0))
            ev["end"] = round(self.t, 3)
            self.score[team] += 1
            n = self._count("goal", team)
            self.flashes.append((self.t, self.t + 2.0, team))
            self._event("goal", team, count=n, header=header, free_kick=free_kick,
                        lead_change=_lead_phrase(self.score, team))
            self._wait(2.6)
            self._ball_to((0.5, 0.5), 2.2)
            self._wait(1.0)
            self.kickoff(opp, half=self.half, after_goal=True)
            return
        kpos = self._approx(k)
        if outcome == "wide":
            wy = float(self.rng.uniform(0.2, GOAL_Y[0] - 0.04) if self.rng.random() < 0.5
                       else self.rng.uniform(GOAL_Y[1] + 0.04, 0.8))
            tgt = (goal_x + d * 0.03, wy)
            self._ball_to(tgt, self._flight(src, tgt, per_unit=0.9, base=0.3, lo=0.4, hi=1.0))
            ev["end"] = round(self.t, 3)
            self._event("miss", team, count=self._count("miss", team), header=header)
            self._wait(0.8)
            spot = (goal_x - d * 0.06, float(np.clip(self.ball[1], 0.4, 0.6)))
            self._ball_to(spot, 1.3)
            self._take(k)
            self._event("goal_kick", opp)
            self._wait(float(self.rng.uniform(1.2, 1.6)))
            r, tgt = self._choose_receiver("forward")
            self.pass_to(r, tgt, kind="forward", from_keeper=True)
            return
        catch = (float(kpos[0] + attack_dir(opp) * PIN_OFFSET), float(np.clip(kpos[1], 0.3, 0.7)))
        self._ball_to(catch, self._flight(src, catch, per_unit=0.9, base=0.3, lo=0.4, hi=1.0))
        ev["end"] = round(self.t, 3)
        if outcome == "save":
            self._take(k)
            nsave = self._count("save", opp)
            self._event("save", opp, count=nsave, shooter=TEAM_NAMES[team], header=header, deflected=False)
            self._wait(float(self.rng.uniform(1.3, 2.0)))
            r, tgt = self._choose_receiver("forward")
            self.pass_to(r, tgt, kind="forward", from_keeper=True)
            return
        # outcome == "corner": parried over the line
        nsave = self._count("save", opp)
        self._event("save", opp, count=nsave, shooter=TEAM_NAMES[team], header=header, deflected=True)
        self.pins.append((k, self.t - 0.05, self.t + 0.1))
        side = 0 if self.rng.random() < 0.5 else 1
        out_pt = (goal_x + d * 0.03, 0.22 if side == 0 else 0.78)
        self._ball_to(out_pt, 0.5)
        self._wait(0.4)
        self.corner(team, side)

    def corner(self, team: int, side: int) -> None:
        d = attack_dir(team)
        goal_x = 1.0 if team == RED else 0.0
        flag = (goal_x, 0.0 if side == 0 else 1.0)
        self._ball_to(flag, 1.1)
        taker = self._nearest(team, flag)
        self._take(taker)
        n = self._count("corner", team)
        self._event("corner", team, count=n, side=_side(flag[1]))
        self._wait(float(self.rng.uniform(1.8, 2.4)))
        fwd = [p for p in outfield(team) if p != taker]
        recv = fwd[int(self.rng.integers(0, len(fwd)))]
        tgt = (goal_x - d * float(self.rng.uniform(0.08, 0.14)), float(self.rng.uniform(0.4, 0.6)))
        ev = self._event("cross", team, corner=True)
        self._release()
        self._set_poss(-1)
        self._ball_to(tgt, 0.9)
        ev["end"] = round(self.t, 3)
        r = self.rng.random()
        if r < 0.62:
            self._take(recv)
            self._wait(0.15)
            self.shot(header=True, outcome=str(self.rng.choice(["goal", "save", "wide"], p=[0.45, 0.35, 0.2])))
        else:
            opp = 1 - team
            o = self._nearest(opp, tgt)
            self._take(o)
            self._event("clearance", opp, count=self._count("clearance", opp))
            self._wait(0.2)
            r2, tgt2 = self._choose_receiver("forward")
            self.pass_to(r2, tgt2, kind="forward")

    def quiet_spell(self, phase_end: float) -> None:
        length = float(self.rng.uniform(3.2, 4.6))
        start = self.t
        ev = self._event("quiet", self.team)
        while self.t < start + length and self.t < phase_end - 4.0:
            self._hold(float(self.rng.uniform(0.9, 1.5)), forward=float(self.rng.uniform(-0.01, 0.02)))
            if self.t >= start + length:
                break
            self.pass_play(str(self.rng.choice(["square", "back"])), quiet=True, zone=(0.3, 0.7))
        ev["end"] = round(self.t, 3)
        self.silences.append((start, self.t))
        self.next_quiet = self.t + float(self.rng.uniform(32.0, 55.0))

    def step(self, phase_end: float) -> None:
        rem = phase_end - self.t
        team = self.team
        bx = progress(team, self.ball[0])
        rng = self.rng
        if (self.t >= self.next_quiet and 0.3 < self.ball[0] < 0.7 and rem > 14.0
                and self.t - self.last_major > 7.0):
            self.quiet_spell(phase_end)
            return
        if bx < 0.35:
            opts = {"forward": 0.55, "square": 0.14, "dribble": 0.12, "interception": 0.08, "tackle": 0.05,
                    "out": 0.06}
        elif bx < 0.68:
            opts = {"forward": 0.45, "square": 0.11, "dribble": 0.15, "tackle": 0.08, "interception": 0.07,
                    "foul": 0.07, "out": 0.07}
        else:
            opts = {"shot": 0.5, "square": 0.14, "dribble": 0.1, "tackle": 0.09, "foul": 0.09,
                    "interception": 0.04, "out": 0.04}
        if self.event_rate != 1.0:  # faster attacks: more forward play and shots, fewer turnovers
            for k in opts:
                opts[k] *= self.event_rate if k in ("forward", "dribble", "shot") else 1.0 / self.event_rate
        if rem < 12.0:
            opts.pop("shot", None)
        if rem < 9.0:
            for k in ("foul", "out"):
                opts.pop(k, None)
        names = list(opts)
        w = np.array([opts[k] for k in names])
        act = names[int(rng.choice(len(names), p=w / w.sum()))]
        if act in ("forward", "square"):
            self.pass_play(act)
        elif act == "dribble":
            self.dribble()
        elif act == "tackle":
            self.tackle()
        elif act == "interception":
            self.interception()
        elif act == "foul":
            self.foul(rem)
        elif act == "out":
            self.ball_out()
        elif act == "shot":
            self.shot(rem)

    def play_phase(self, phase_end: float, kickoff_team: int, half: int) -> None:
        self.half = half
        self.phase_end = phase_end
        self.kickoff(kickoff_team, half)
        while phase_end - self.t >= 3.5:
            self.step(phase_end)
        rem = phase_end - self.t
        if rem > 0 and self.holder is not None:
            self._hold(rem, forward=0.01)
        elif rem > 0:
            self._wait(rem)

    def run(self) -> None:
        dur = self.duration
        tail = min(4.0, 0.1 * dur)
        first = int(self.rng.integers(0, 2))
        if dur >= 40.0:
            brk = float(self.rng.uniform(10.0, 16.0)) if dur >= 120.0 else 10.0
            h0 = dur / 2.0 - brk / 2.0
            self.play_phase(h0, first, half=1)
            self._release()
            self._set_poss(-1)
            self._event("half_time", None, end=round(h0 + brk, 3), stats=self._stats())
            self.hidden.append((self.t, h0 + brk))
            self._ball_to((0.5, 0.5), 0.05)
            self._ball_to((0.5, 0.5), h0 + brk - self.t)
            self.play_phase(dur - tail, 1 - first, half=2)
        else:
            self.play_phase(dur - tail, first, half=1)
        self._release()
        self._set_poss(-1)
        self._event("full_time", None, end=round(dur, 3), stats=self._stats())
        if dur - self.t > 0.01:
            self._wait(dur - self.t)

    def _stats(self) -> dict[str, list[int]]:
        kinds = ("goal", "shot", "corner", "foul", "save", "throw_in")
        return {k: [self.counts.get((k, RED), 0), self.counts.get((k, BLUE), 0)] for k in kinds}


def _zone(team: int, x: float) -> str:
    p = progress(team, x)
    return "defence" if p < 0.35 else ("midfield" if p < 0.68 else "attack")


def _side(y: float) -> str:
    return "far" if y < 0.5 else "near"


def _lead_phrase(score: list[int], team: int) -> str:
    """What a goal by `team` did to the match, given the score after it."""
    s, o = score[team], score[1 - team]
    if s == o:
        return "equaliser"
    if s == o + 1:
        return "lead"
    if s > o + 1:
        return "extend"
    return "pull_back"


def _box_smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 (edges padded), applied twice for a smooth triangular kernel."""
    if width <= 1:
        return x
    for _ in range(2):
        pad_l, pad_r = width // 2, width - 1 - width // 2
        xp = np.concatenate([np.repeat(x[:1], pad_l, axis=0), x, np.repeat(x[-1:], pad_r, axis=0)], axis=0)
        c = np.cumsum(xp, axis=0, dtype=np.float64)
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), c], axis=0)
        x = (c[width:] - c[:-width]) / width
    return x


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def simulate(seed: int, duration: float, fps: float = 24.0, event_rate: float = 1.0) -> Game:
    """Script a match of `duration` seconds from `seed` and sample it at `fps`.

    `event_rate` scales how often a team plays forward, dribbles and shoots (1: the default match; 5: about twice the
    goals, saves and corners per minute)."""
    if not duration >= MIN_DURATION:
        raise ValueError(f"duration must be at least {MIN_DURATION:g} seconds")
    if not (np.isfinite(event_rate) and 0.1 <= event_rate <= 10.0):
        raise ValueError(f"event rate must be between 0.1 and 10, got {event_rate!r}")
    rng = np.random.default_rng(seed)
    plan = _Planner(rng, float(duration), float(event_rate))
    plan.run()

    n = max(int(round(duration * fps)), 1)
    times = np.arange(n) / fps
    kf = np.array(plan.kf)
    # keyframe times must increase strictly for interpolation
    kt = kf[:, 0].copy()
    for i in range(1, len(kt)):
        if kt[i] <= kt[i - 1]:
            kt[i] = kt[i - 1] + 1e-6
    ball = np.stack([np.interp(times, kt, kf[:, 1]), np.interp(times, kt, kf[:, 2])], axis=1)

    pt = np.array([p[0] for p in plan.poss])
    pv = np.array([p[1] for p in plan.poss], dtype=np.int8)
    idx = np.searchsorted(pt, times, side="right") - 1
    possession = pv[np.clip(idx, 0, len(pv) - 1)]

    hidden = np.zeros(n, dtype=bool)
    for a, b in plan.hidden:
        hidden[(times >= a) & (times < b)] = True

    # formation positions from the smoothed ball and possession, plus a gentle personal wander
    sig = np.where(possession == RED, 1.0, np.where(possession == BLUE, -1.0, 0.0))
    w = max(int(round(1.2 * fps)), 1)
    bs = _box_smooth(ball, w)
    ps = _box_smooth(sig[:, None], w)[:, 0]
    players = base_positions(bs[:, 0], bs[:, 1], ps)
    wrng = np.random.default_rng([seed, 11])
    freq = wrng.uniform(0.05, 0.2, size=(N_PLAYERS, 2))
    phase = wrng.uniform(0, 2 * np.pi, size=(N_PLAYERS, 2))
    amp = np.where(PLAYER_KEEPER[:, None], 0.0, 0.018)
    players += amp[None] * np.sin(2 * np.pi * freq[None] * times[:, None, None] + phase[None])

    # pins: a player holding the ball stands right behind it; he runs in before and drifts off after.
    # Pins are blended in time order, one after the other, so overlapping ramps stay continuous.
    for p, t0, t1 in sorted(plan.pins, key=lambda pin: (pin[1], pin[2], pin[0])):
        d = attack_dir(int(PLAYER_TEAM[p]))
        off = np.array([-d * PIN_OFFSET, 0.0])
        f_a = max(int(np.ceil((t0 - RAMP_IN) * fps)), 0)
        f_b = min(int(np.floor((t1 + RAMP_OUT) * fps)), n - 1)
        if f_b < f_a:
            continue
        fr = np.arange(f_a, f_b + 1)
        tt = fr / fps
        wgt = np.ones(len(fr))
        before, after = tt < t0, tt > t1
        wgt[before] = _smoothstep(1.0 - (t0 - tt[before]) / RAMP_IN)
        wgt[after] = _smoothstep(1.0 - (tt[after] - t1) / RAMP_OUT)
        tgt = ball[fr] + off
        tgt[before] = ball[min(max(int(round(t0 * fps)), 0), n - 1)] + off
        tgt[after] = ball[min(max(int(round(t1 * fps)), 0), n - 1)] + off
        players[fr, p] = players[fr, p] * (1.0 - wgt[:, None]) + tgt * wgt[:, None]
    players[..., 0] = np.clip(players[..., 0], -0.02, 1.02)
    players[..., 1] = np.clip(players[..., 1], -0.02, 1.02)

    score = np.zeros((n, 2), dtype=np.int16)
    flash = np.full(n, -1, dtype=np.int8)
    for a, b, team in plan.flashes:
        sel = (times >= a) & (times < b)
        flash[sel] = team
    for ev in plan.events:
        if ev["type"] == "goal":
            sel = times >= ev["t"]
            score[sel, 0 if ev["team"] == "Red" else 1] += 1
    caption = np.full(n, -1, dtype=np.int8)
    for ev in plan.events:  # in time order: a later caption replaces an earlier one
        if ev["type"] in CAPTION_CODES and ev["team"]:
            sel = (times >= ev["t"]) & (times < ev["t"] + CAPTION_S)
            caption[sel] = CAPTION_CODES[ev["type"]] + TEAM_NAMES.index(ev["team"])
    foul_mark = np.full((n, 2), np.nan)
    for a, b, x, y in plan.fouls:
        sel = (times >= a) & (times < b)
        foul_mark[sel] = (x, y)

    visible = ~hidden
    # events that end after the video (cannot happen by construction, but keep the log consistent)
    for ev in plan.events:
        ev["end"] = round(min(max(ev["end"], ev["t"]), float(duration)), 3)
    return Game(
        seed=int(seed), duration=float(duration), fps=float(fps), events=plan.events, ball=ball,
        players=players, ball_visible=visible.copy(), players_visible=visible.copy(), possession=possession,
        score=score, flash=flash, foul_mark=foul_mark, hidden=hidden, caption=caption,
        silences=[(float(a), float(b)) for a, b in plan.silences],
    )
