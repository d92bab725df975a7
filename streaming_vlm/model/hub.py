"""A hub id (`Qwen/Qwen3-VL-2B-Instruct`) resolved before anything loads, so that no network means one clear line.

Without network, `from_pretrained` on a hub id retries every file it looks for, for minutes, and then says only that
it could not connect. So before loading, a hub id is checked once:

- the hub answers one metadata request (one try, `PROBE_TIMEOUT` seconds): the id is returned and transformers
  downloads or refreshes the files as usual;
- it does not (or `HF_HUB_OFFLINE=1`), and the id is in the local Hugging Face cache: the cached snapshot directory
  is returned, so nothing reaches for the network;
- neither: a `UserError` saying how to get the files.
"""

from __future__ import annotations

import functools
import os

from streaming_vlm.errors import UserError

PROBE_TIMEOUT = 5.0


def looks_like_hub_id(path: str) -> bool:
    """`owner/name` that is not a local path."""
    return not (os.path.isabs(path) or path.startswith(".") or os.path.exists(path) or path.count("/") != 1)


def _cached_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    return os.path.dirname(config) if isinstance(config, str) else None


def _unreachable(repo_id: str) -> str | None:
    """Why the hub cannot serve `repo_id` now (None: it can)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=PROBE_TIMEOUT, retry_on_errors=False)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status == 404:
            raise UserError(f"{repo_id} is not a model on the hub ({constants.ENDPOINT}): check --model_path / "
                            "model.name_or_path") from None
        return None  # the hub answered (gated, rate limit, ...): transformers reports it in its own words
    except Exception as err:  # noqa: BLE001 - any transport failure (DNS, refused, timeout, TLS) means unreachable
        return f"{constants.ENDPOINT} did not answer: {type(err).__name__}"
    return None


@functools.lru_cache(maxsize=None)
def resolve_hub_id(repo_id: str) -> str:
    """`repo_id` when the hub serves it, else its cached snapshot directory; a UserError when neither."""
    why = _unreachable(repo_id)
    if why is None:
        return repo_id
    cached = _cached_snapshot(repo_id)
    if cached is not None:
        return cached
    raise UserError(f"cannot load {repo_id}: it is not in the local Hugging Face cache and the hub cannot be reached "
                    f"({why}). Download it where there is network (`hf download {repo_id} --local-dir DIR`) and pass "
                    "DIR as the model path, or fill the cache (HF_HOME) there and copy it here")
