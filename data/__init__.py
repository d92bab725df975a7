"""Data sets made or converted for this project: `python -m data.synthetic` generates synthetic football streams
(videos, word-timed commentary, event logs; `data/synth/`), `data.livesports` converts LiveSports-3K-CC rows."""
