"""Checking a local checkpoint's weight files before anything loads (no torch import: it runs among the cheap
checks of every entry point)."""

from __future__ import annotations

import os

from streaming_vlm.errors import UserError


def check_weights(path: str | os.PathLike) -> None:
    """Every `*.safetensors` file of a local checkpoint opens with a whole header and data (a truncated or
    corrupt download is one clear line here, before anything loads, not a traceback from deep in from_pretrained)."""
    if not os.path.isdir(str(path)):
        return
    from safetensors import SafetensorError, safe_open

    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            file = os.path.join(str(path), name)
            try:
                with safe_open(file, framework="numpy"):  # the header and size only; no torch
                    pass
            except (SafetensorError, OSError) as err:
                raise UserError(f"weights file {file} is damaged or truncated ({str(err).splitlines()[0]}); "
                                "copy or download it again") from None
