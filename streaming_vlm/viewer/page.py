"""The viewer page: one HTML file with its style and script inline (no build step, nothing downloaded).

The video plays with the commentary as its `<track>` (captions shown on the video), and the list of cues beside
it: clicking a cue seeks the video to its start, and the cues active at the current time are highlighted (the
track's `cuechange` event). The list is built from the track's own cues, so the two never disagree.

Two modes, one page:
- static (`captions` given): the VTT is embedded in the page as the track's data: URL, so the page needs only the
  video file (referenced relative to the page) and works from file://;
- live (`captions=None`): the page subscribes to the server's `/events` (server-sent events, one JSON object per
  cue: `{"type": "segment"|"answer"|"skipped", ...}`), adds each cue to the track and the list as it arrives, and
  posts questions typed in its box to `/ask`. Without a playable video (a live source) the newest cue is the
  highlighted one.
"""

from __future__ import annotations

import base64
import html
import json

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { margin: 0; font: 15px/1.4 system-ui, sans-serif; background: #111; color: #eee; }
  header { padding: 8px 16px; background: #222; font-weight: 600; }
  main { display: flex; gap: 16px; padding: 16px; height: calc(100vh - 80px); box-sizing: border-box; }
  #player { flex: 2; min-width: 0; }
  video { width: 100%; max-height: 100%; background: #000; }
  #side { flex: 1; display: flex; flex-direction: column; min-width: 260px; }
  #cues { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; border: 1px solid #333; }
  #cues li { padding: 6px 10px; border-bottom: 1px solid #2a2a2a; cursor: pointer; white-space: pre-wrap; }
  #cues li:hover { background: #1d2a3a; }
  #cues li.active { background: #2d5a8a; color: #fff; }
  #cues li.skipped { color: #888; font-style: italic; cursor: default; }
  #cues .t { color: #9ab; font-variant-numeric: tabular-nums; margin-right: 8px; }
  #ask { display: flex; gap: 6px; margin-top: 8px; }
  #ask[hidden] { display: none; }
  #ask input { flex: 1; padding: 6px; background: #222; color: #eee; border: 1px solid #444; }
  #status, #asked { color: #9ab; font-size: 13px; margin-top: 6px; }
  .novideo #player { display: none; }
</style>
</head>
<body class="__BODY_CLASS__">
<header>__TITLE__</header>
<main>
  <div id="player">
    <video id="video" controls preload="auto" __VIDEO_SRC__>
      __TRACK__
    </video>
  </div>
  <div id="side">
    <ul id="cues"></ul>
    <form id="ask" hidden><input id="question" placeholder="Ask about the stream..." autocomplete="off">
      <button>Ask</button></form>
    <div id="asked"></div>
    <div id="status"></div>
  </div>
</main>
<script>
"use strict";
const LIVE = __LIVE__;
const video = document.getElementById("video");
const list = document.getElementById("cues");
const status = document.getElementById("status");  // the cue count: rewritten by every event
const asked = document.getElementById("asked");  // the last question's state, which cues must not overwrite
const trackElement = video.querySelector("track");
const track = trackElement ? trackElement.track : video.addTextTrack("captions", "commentary", "en");
track.mode = "showing";
const items = new Map();  // VTTCue -> <li>

function clock(t) {
  const s = Math.floor(t), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s % 60).padStart(2, "0");
}

function addItem(cue) {
  const li = document.createElement("li");
  const t = document.createElement("span");
  t.className = "t";
  t.textContent = clock(cue.startTime);
  li.append(t, cue.getCueAsHTML());  // the cue's payload as the track renders it (escapes decoded)
  // just past the start: at the exact boundary the cue ending there would still count as active
  li.addEventListener("click", () => { video.currentTime = cue.startTime + 0.001; });
  items.set(cue, li);
  list.append(li);
  return li;
}

function escapeCue(text) {  // plain text as a cue payload (a VTT cue's text is markup)
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function highlight(active) {
  for (const [cue, li] of items) li.classList.toggle("active", active.has(cue));
  const first = [...active].map((c) => items.get(c)).find(Boolean);
  if (first) first.scrollIntoView({block: "nearest"});
}

track.addEventListener("cuechange", () => highlight(new Set(track.activeCues || [])));

function listTrack() {
  if (items.size || !track.cues) return;
  for (const cue of track.cues) addItem(cue);
  status.textContent = track.cues.length + " cues";
}
if (trackElement) {
  trackElement.addEventListener("load", listTrack);
  if (trackElement.readyState === 2) listTrack();
}

if (LIVE) {
  const playable = video.hasAttribute("src");
  if (!playable) document.body.classList.add("novideo");
  const form = document.getElementById("ask");
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const box = document.getElementById("question");
    const question = box.value.trim();
    if (!question) return;
    box.value = "";
    fetch("/ask", {method: "POST", headers: {"Content-Type": "application/json"},
                   body: JSON.stringify({question})})
      .then((r) => { asked.textContent = r.ok ? "asked: " + question : "not asked (" + r.status + ")"; });
  });
  const events = new EventSource("/events");
  events.onmessage = (message) => {
    const ev = JSON.parse(message.data);
    let li;
    if (ev.type === "skipped") {
      li = document.createElement("li");
      li.className = "skipped";
      li.textContent = clock(ev.start) + "-" + clock(ev.end) + " skipped (" + ev.reason + ")";
      list.append(li);
    } else {
      let text = ev.type === "answer" ? "Q: " + ev.question + "\\nA: " + (ev.text || "...") : (ev.text || "...");
      text = escapeCue(text);
      const start = ev.type === "answer" ? ev.time : ev.start;
      const cue = new VTTCue(start, ev.type === "answer" ? ev.time + 1 : ev.end, text);
      track.addCue(cue);
      li = addItem(cue);
      if (ev.type === "answer") asked.textContent = "answered: " + ev.question;
      if (!playable) highlight(new Set([cue]));
    }
    status.textContent = items.size + " cues";
  };
  events.addEventListener("end", () => {
    status.textContent = items.size + " cues; the stream has ended";
    form.hidden = true;
    events.close();
  });
}
</script>
</body>
</html>
"""


def render(title: str, video_src: str | None, captions: str | None = None) -> str:
    """The page. `video_src`: the video's URL (relative to the page, or the server's /video), None for no video;
    `captions`: the WebVTT text to embed (static page), or None for a live page fed by /events."""
    track = ""
    if captions is not None:
        data = base64.b64encode(captions.encode("utf-8")).decode("ascii")
        track = (f'<track kind="captions" label="commentary" srclang="en" default '
                 f'src="data:text/vtt;charset=utf-8;base64,{data}">')
    return (TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__BODY_CLASS__", "" if video_src else "novideo")
            .replace("__VIDEO_SRC__", f'src="{html.escape(video_src, quote=True)}"' if video_src else "")
            .replace("__TRACK__", track)
            .replace("__LIVE__", json.dumps(captions is None)))
