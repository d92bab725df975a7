"""Drawing the match top-down with numpy and encoding it to H.264 with PyAV.

Frame layout (all sizes scale with the resolution):
* a dark scoreboard strip on top: one Red block per Red goal growing from the left edge, one Blue block per Blue
  goal growing from the right edge (units on the upper row; a lower row of smaller blocks counts tens);
* below it the pitch: striped green, light lines (dimmer than the ball), a goal box at each end;
* dots: Red and Blue outfield players, an orange Red keeper, a teal Blue keeper, and the white ball on top;
* marks: the scoring team's colour pulses over the goal it scored in for 2 s after a goal; a yellow square sits just
  above the spot of a foul for 2 s; during half-time the pitch is darkened and nobody is on it;
* event captions (`encode_game(..., captions=True)`; off by default), as broadcasts show them: for
  `game.CAPTION_S` seconds after a goal, a save or a corner, a band across the bottom `CAPTION_FRACTION` of the
  picture, under the players and the ball: the scoring team's colour for a goal, the saving keeper's colour for a
  save, purple with the taking team's colour at its left end for a corner.
The ball is the only pure-white thing in the picture, so "brightest white blob" finds it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from .game import CAPTION_CODES, GOAL_Y, N_PLAYERS, PLAYER_KEEPER, PLAYER_TEAM, Game

SIZE_PRESETS: dict[str, tuple[int, int]] = {"tiny": (160, 96), "small": (320, 192), "medium": (640, 384)}

TEAM_RGB = np.array([(225, 35, 35), (35, 85, 235)], dtype=np.uint8)
KEEPER_RGB = np.array([(255, 150, 20), (20, 200, 200)], dtype=np.uint8)
BALL_RGB = np.array((255, 255, 255), dtype=np.uint8)
FOUL_RGB = np.array((240, 220, 40), dtype=np.uint8)
LINE_RGB = np.array((170, 200, 170), dtype=np.uint8)
GRASS = (np.array((44, 122, 50), dtype=np.uint8), np.array((52, 136, 58), dtype=np.uint8))
SURROUND_RGB = np.array((38, 100, 44), dtype=np.uint8)
NET_RGB = np.array((95, 120, 100), dtype=np.uint8)
STRIP_RGB = np.array((22, 22, 26), dtype=np.uint8)
PENALTY_BOX = (0.16, 0.2, 0.8)  # depth in x, y range
CORNER_RGB = np.array((150, 50, 190), dtype=np.uint8)
CAPTION_FRACTION = 0.3  # of the frame height, at the bottom


def _disk(radius: float) -> np.ndarray:
    """Integer (dy, dx) offsets of a filled disk."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = yy * yy + xx * xx <= radius * radius + 1e-9
    return np.stack([yy[keep], xx[keep]], axis=1)


class Layout:
    """Where things go in a frame of width x height pixels."""

    def __init__(self, width: int, height: int):
        if width < 64 or height < 48 or width % 2 or height % 2:
            raise ValueError(f"resolution {width}x{height} must be even and at least 64x48")
        self.width, self.height = int(width), int(height)
        w, h = self.width, self.height
        self.strip_h = max(8, int(round(h * 0.125)))
        self.margin = max(4, int(round(w * 0.035)))
        self.x0, self.x1 = float(self.margin), float(w - 1 - self.margin)
        self.y0, self.y1 = float(self.strip_h + 2), float(h - 3)
        self.dot_r = max(2.0, w / 64.0)
        self.ball_r = max(1.0, w / 128.0)
        self.block_w = max(4, w // 40)
        self.block_gap = max(2, w // 80)
        # scoreboard rows: units (taller) above tens (shorter)
        s = self.strip_h
        self.units_rows = (max(1, s // 6), max(2, (s * 7) // 12))
        self.tens_rows = (self.units_rows[1] + max(1, s // 12), s - max(1, s // 6))

    def to_px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = self.x0 + xy[..., 0] * (self.x1 - self.x0)
        out[..., 1] = self.y0 + xy[..., 1] * (self.y1 - self.y0)
        return out

    def block_spans(self, team: int, n: int) -> list[tuple[int, int]]:
        """Column spans [a, b) of the first n scoreboard blocks of a team."""
        step = self.block_w + self.block_gap
        spans = []
        for i in range(n):
            if team == 0:
                a = self.block_gap + i * step
            else:
                a = self.width - self.block_gap - self.block_w - i * step
            spans.append((a, a + self.block_w))
        return spans


class Renderer:
    def __init__(self, layout: Layout, captions: bool = False):
        self.L = layout
        self.show_captions = bool(captions)
        self.bg = self._background()
        self.bg_dark = self.bg.copy()
        s = layout.strip_h
        self.bg_dark[s:] = (self.bg[s:].astype(np.float32) * 0.3).astype(np.uint8)
        self.flash_mask = [self._goal_area_mask(right=True), self._goal_area_mask(right=False)]
        self._flash_cache: dict[tuple[int, int], np.ndarray] = {}
        self._strip_cache: dict[tuple[int, int], np.ndarray] = {}
        self.caption_top = layout.height - int(round(CAPTION_FRACTION * layout.height))
        self.captions = [self._caption(code) for code in range(6)]
        self.dot = _disk(layout.dot_r)
        self.ball = _disk(layout.ball_r + 0.45) if layout.ball_r > 1.0 else np.array(
            [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        self.foul_half = max(2, int(round(layout.width / 64)))
        colors = np.empty((N_PLAYERS, 3), dtype=np.uint8)
        for p in range(N_PLAYERS):
            team = int(PLAYER_TEAM[p])
            colors[p] = KEEPER_RGB[team] if PLAYER_KEEPER[p] else TEAM_RGB[team]
        self.player_rgb = np.repeat(colors, len(self.dot), axis=0)

    # ------------------------------------------------------------ static parts
    def _background(self) -> np.ndarray:
        L = self.L
        w, h = L.width, L.height
        img = np.empty((h, w, 3), dtype=np.uint8)
        img[:] = SURROUND_RGB
        x0, x1, y0, y1 = int(round(L.x0)), int(round(L.x1)), int(round(L.y0)), int(round(L.y1))
        stripes = 10
        for i in range(stripes):
            a = x0 + (x1 - x0 + 1) * i // stripes
            b = x0 + (x1 - x0 + 1) * (i + 1) // stripes
            img[y0:y1 + 1, a:b] = GRASS[i % 2]
        lw = max(1, w // 320)

        def hline(y, xa, xb):
            y = int(round(y))
            img[y:y + lw, int(round(xa)):int(round(xb)) + 1] = LINE_RGB

        def vline(x, ya, yb):
            x = int(round(x))
            img[int(round(ya)):int(round(yb)) + 1, x:x + lw] = LINE_RGB

        # goals (behind the goal lines), drawn first so the goal line stays on top
        gy0, gy1 = L.to_px(np.array([0.0, GOAL_Y[0]]))[1], L.to_px(np.array([0.0, GOAL_Y[1]]))[1]
        depth = L.margin - 1
        img[int(round(gy0)):int(round(gy1)) + 1, x1 + 1:x1 + 1 + depth] = NET_RGB
        img[int(round(gy0)):int(round(gy1)) + 1, x0 - depth:x0] = NET_RGB
        hline(gy0, x1, x1 + depth)
        hline(gy1, x1, x1 + depth)
        hline(gy0, x0 - depth, x0)
        hline(gy1, x0 - depth, x0)
        # outline, halfway line, centre circle and spot
        hline(y0, x0, x1)
        hline(y1, x0, x1)
        vline(x0, y0, y1)
        vline(x1, y0, y1)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        vline(cx, y0, y1)
        rad = 0.14 * (y1 - y0)
        ang = np.linspace(0, 2 * np.pi, 400)
        px = np.round(cx + rad * np.cos(ang)).astype(int)
        py = np.round(cy + rad * np.sin(ang)).astype(int)
        img[py, px] = LINE_RGB
        # penalty boxes
        depth_x, ya, yb = PENALTY_BOX
        for right in (False, True):
            xin = L.to_px(np.array([1.0 - depth_x if right else depth_x, 0.0]))[0]
            pya = L.to_px(np.array([0.0, ya]))[1]
            pyb = L.to_px(np.array([0.0, yb]))[1]
            hline(pya, min(xin, x1 if right else x0), max(xin, x1 if right else x0))
            hline(pyb, min(xin, x1 if right else x0), max(xin, x1 if right else x0))
            vline(xin, pya, pyb)
        img[: L.strip_h] = STRIP_RGB
        return img

    def _caption(self, code: int) -> np.ndarray:
        """The caption band (rows caption_top..height) for a caption code (game.CAPTION_CODES[type] + team)."""
        L = self.L
        team = code % 2
        band = np.empty((L.height - self.caption_top, L.width, 3), dtype=np.uint8)
        if code // 2 == CAPTION_CODES["goal"] // 2:
            band[:] = TEAM_RGB[team]
        elif code // 2 == CAPTION_CODES["save"] // 2:
            band[:] = KEEPER_RGB[team]
        else:
            band[:] = CORNER_RGB
            band[:, : L.width // 4] = TEAM_RGB[team]
        return band

    def _goal_area_mask(self, right: bool) -> np.ndarray:
        """Penalty box plus the goal it guards (right = the goal Red attacks)."""
        L = self.L
        mask = np.zeros((L.height, L.width), dtype=bool)
        depth_x, ya, yb = PENALTY_BOX
        xa = L.to_px(np.array([1.0 - depth_x if right else 0.0, 0.0]))[0]
        xb = L.to_px(np.array([1.0 if right else depth_x, 0.0]))[0]
        pya, pyb = L.to_px(np.array([0.0, ya]))[1], L.to_px(np.array([0.0, yb]))[1]
        mask[int(round(pya)) + 1:int(round(pyb)), int(round(xa)) + 1:int(round(xb))] = True
        gy0, gy1 = L.to_px(np.array([0.0, GOAL_Y[0]]))[1], L.to_px(np.array([0.0, GOAL_Y[1]]))[1]
        depth = L.margin - 1
        if right:
            mask[int(round(gy0)) + 1:int(round(gy1)), int(round(L.x1)) + 1:int(round(L.x1)) + 1 + depth] = True
        else:
            mask[int(round(gy0)) + 1:int(round(gy1)), int(round(L.x0)) - depth:int(round(L.x0))] = True
        return mask

    def _flash_bg(self, team: int, strong: int) -> np.ndarray:
        key = (team, strong)
        if key not in self._flash_cache:
            img = self.bg.copy()
            m = self.flash_mask[team]  # Red scores in the right goal, Blue in the left one
            a = 0.75 if strong else 0.5
            img[m] = (img[m].astype(np.float32) * (1 - a) + TEAM_RGB[team].astype(np.float32) * a).astype(np.uint8)
            self._flash_cache[key] = img
        return self._flash_cache[key]

    def strip(self, red: int, blue: int) -> np.ndarray:
        key = (int(red), int(blue))
        if key not in self._strip_cache:
            L = self.L
            st = np.empty((L.strip_h, L.width, 3), dtype=np.uint8)
            st[:] = STRIP_RGB
            for team, goals in ((0, key[0]), (1, key[1])):
                goals = min(goals, 99)
                units, tens = goals % 10, goals // 10
                for rows, n in ((L.units_rows, units), (L.tens_rows, tens)):
                    for a, b in L.block_spans(team, n):
                        st[rows[0]:rows[1], a:b] = TEAM_RGB[team]
            self._strip_cache[key] = st
        return self._strip_cache[key]

    # ------------------------------------------------------------ per frame
    def frame(self, game: Game, i: int, ball_px: np.ndarray, players_px: np.ndarray) -> np.ndarray:
        L = self.L
        if game.hidden[i]:
            img = self.bg_dark.copy()
        elif game.flash[i] >= 0:
            strong = int((i / game.fps) * 2.5) % 2 == 0
            img = self._flash_bg(int(game.flash[i]), int(strong)).copy()
        else:
            img = self.bg.copy()
        img[: L.strip_h] = self.strip(game.score[i, 0], game.score[i, 1])
        if self.show_captions and game.caption[i] >= 0:
            img[self.caption_top:] = self.captions[int(game.caption[i])]
        h, w = L.height, L.width
        fm = game.foul_mark[i]
        if not np.isnan(fm[0]):
            fx, fy = L.to_px(fm)
            k = self.foul_half
            cy = int(round(fy - L.dot_r * 2 - k - 1))
            cx = int(round(fx))
            img[max(cy - k, L.strip_h):max(cy + k, L.strip_h), max(cx - k, 0):min(cx + k, w)] = FOUL_RGB
        if game.players_visible[i]:
            pp = np.round(players_px[i]).astype(np.int64)  # (P, 2) x, y
            ys = (pp[:, None, 1] + self.dot[None, :, 0]).ravel()
            xs = (pp[:, None, 0] + self.dot[None, :, 1]).ravel()
            ok = (ys >= L.strip_h) & (ys < h) & (xs >= 0) & (xs < w)
            img[ys[ok], xs[ok]] = self.player_rgb[ok]
        if game.ball_visible[i]:
            bx, by = np.round(ball_px[i]).astype(np.int64)
            ys = by + self.ball[:, 0]
            xs = bx + self.ball[:, 1]
            ok = (ys >= L.strip_h) & (ys < h) & (xs >= 0) & (xs < w)
            img[ys[ok], xs[ok]] = BALL_RGB
        return img


def encode_game(game: Game, layout: Layout, path: str | Path, crf: int = 18, preset: str = "veryfast",
                threads: int = 1, captions: bool = False) -> int:
    """Render every frame of `game` and write an H.264 (yuv420p) mp4. Returns the number of frames.
    `captions`: draw the event captions (module docstring)."""
    import av  # local import: keeps `import data.synth` light

    renderer = Renderer(layout, captions=captions)
    ball_px = layout.to_px(game.ball)
    players_px = layout.to_px(game.players)
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    rate = Fraction(game.fps).limit_denominator(1001)
    container = av.open(str(tmp), mode="w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = layout.width, layout.height
        stream.pix_fmt = "yuv420p"
        gop = max(int(round(game.fps * 2)), 1)
        stream.options = {"crf": str(crf), "preset": preset, "g": str(gop), "keyint_min": str(gop)}
        stream.codec_context.thread_count = max(int(threads), 1)
        stream.codec_context.time_base = Fraction(1, 1) / rate
        for i in range(game.n_frames):
            frame = av.VideoFrame.from_ndarray(renderer.frame(game, i, ball_px, players_px), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    tmp.replace(path)
    return game.n_frames
