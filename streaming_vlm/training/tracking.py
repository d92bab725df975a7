"""wandb mode: online with an API key and a reachable server, offline otherwise, disabled on request. The server is
wandb's own setting, WANDB_BASE_URL (default https://api.wandb.ai), so a self-hosted server is probed, not the
public one."""

from __future__ import annotations

import hashlib
import importlib.util
import netrc
import os
import socket

MODES = ("auto", "online", "offline", "disabled")


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def _reachable(timeout: float = 2.0) -> bool:
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(mode: str | None) -> str:
    """WANDB_MODE in the environment wins; `auto` -> online only with an API key AND network."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return "disabled" if env in ("disabled", "dryrun_disabled") else env
    mode = (mode or "auto").lower()
    if mode not in MODES:
        from streaming_vlm.errors import UserError

        raise UserError(f"wandb.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        mode = "online" if _has_api_key() and _reachable() else "offline"
    return mode


def setup(wandb_cfg, report_to, output_dir: str, run_name: str, is_main: bool = True) -> tuple[list[str], str]:
    """Export wandb's env vars for HF's WandbCallback; returns (report_to list, resolved mode)."""
    if report_to not in (None, "auto"):
        targets = [report_to] if isinstance(report_to, str) else list(report_to)
        targets = [t for t in targets if t != "none"]
    else:
        targets = ["wandb"]
    mode = resolve_mode(wandb_cfg.get("mode") if wandb_cfg else None) if "wandb" in targets else "disabled"
    if mode == "disabled" or importlib.util.find_spec("wandb") is None:
        targets = [t for t in targets if t != "wandb"]
        return targets, "disabled"
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_DIR", output_dir)
    os.environ.setdefault("WANDB_PROJECT", str(wandb_cfg.get("project") or "streaming-vlm"))
    if wandb_cfg.get("entity"):
        os.environ.setdefault("WANDB_ENTITY", str(wandb_cfg.entity))
    if wandb_cfg.get("group"):
        os.environ.setdefault("WANDB_RUN_GROUP", str(wandb_cfg.group))
    if wandb_cfg.get("tags"):
        os.environ.setdefault("WANDB_TAGS", ",".join(map(str, wandb_cfg.tags)))
    os.environ.setdefault("WANDB_SILENT", "true")
    # One wandb run per output dir, resumed along with the training (same id after a requeue).
    os.environ.setdefault("WANDB_RUN_ID", "".join(c if c.isalnum() else "-" for c in run_name)[:48] + "-" +
                          hashlib.sha1(os.path.abspath(output_dir).encode()).hexdigest()[:8])
    os.environ.setdefault("WANDB_RESUME", "allow")
    return targets, mode
