"""The one HTTP client for OpenAI-compatible chat-completions endpoints (OpenAI, vLLM, SGLang, LiteLLM, ...).

Both the LLM judge (`openai_judge.py`) and the baseline commentator (`baseline.py`) talk through it, so retries,
timeouts and key handling exist once.

Key: read from the environment variable NAMED by `api_key_env` and kept only in the `Authorization: Bearer` header.
It is not in `repr`, not in any error message, and never written anywhere.

Transport (httpx): every attempt has its own timeout (`timeout` seconds for each of connect / write / read). HTTP
429, 5xx, timeouts, connection errors and a 200 whose body is not a chat-completions JSON are retried, at most
`max_attempts` attempts in all, sleeping backoff_base * 2**i seconds between them (capped at `backoff_max`; a 429's
Retry-After is honoured within that cap). Other 4xx (bad key, unknown model, a request too large) are not retried:
`EndpointRejected`. When every attempt failed to reach the endpoint: `EndpointUnavailable`. When the endpoint kept
answering 200 with unreadable bodies, `complete` returns a `ChatReply` with `content=None` and the body's start in
`unreadable`, so the caller decides (the judge counts it "invalid" and does not cache it).

Usage: every HTTP attempt sent and the `usage` tokens of every readable answer are counted in `usage()`, so a run
can report what it cost. Thread-safe: `complete` may be called from several threads at once.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import httpx

from streaming_vlm.errors import UserError

RAW_CHARS = 200  # how much of an unreadable body is kept for the error report


class EndpointUnavailable(UserError):
    """The endpoint could not be reached or kept failing after the bounded retries."""


class EndpointRejected(UserError):
    """The endpoint refused the request (4xx other than 429): retrying will not help."""


@dataclass(frozen=True)
class ChatReply:
    content: str | None  # the first choice's message content; None when every answer was unreadable
    usage: dict = field(default_factory=dict)  # the answer's "usage" object (prompt_tokens, completion_tokens, ...)
    unreadable: str | None = None  # the start of the last unreadable body, when content is None


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str,
        *,
        role: str = "endpoint",
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        concurrency: int = 4,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"{role} base URL must start with http:// or https://, got {base_url!r}")
        if max_attempts < 1:
            raise UserError(f"max attempts must be >= 1, got {max_attempts}")
        if timeout <= 0:
            raise UserError(f"{role} timeout must be positive, got {timeout}")
        key = os.environ.get(api_key_env, "")
        if not key:
            raise UserError(
                f"environment variable {api_key_env} is not set: the {role} needs an API key "
                f"(export {api_key_env}=..., or choose another variable with --api-key-env)"
            )
        self.role = role
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._headers = {"Authorization": f"Bearer {key}"}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency)),
            trust_env=False,  # an endpoint on 127.0.0.1 must not go through a proxy from the environment
        )
        self._lock = threading.Lock()
        self._usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def usage(self) -> dict:
        """HTTP requests sent (every attempt) and tokens billed in the readable answers, so far."""
        with self._lock:
            return dict(self._usage)

    def _count(self, requests: int = 0, usage: dict | None = None) -> None:
        with self._lock:
            self._usage["requests"] += requests
            for name in ("prompt_tokens", "completion_tokens"):
                value = (usage or {}).get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    self._usage[name] += value

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        delay = self.backoff_base * (2**attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.backoff_max)

    def complete(self, body: dict) -> ChatReply:
        """POST one chat-completions request (with retries, see the module docstring)."""
        failure, unreadable = "", None
        for attempt in range(self.max_attempts):
            retry_after = None
            self._count(requests=1)
            try:
                response = self._client.post(self.url, json=body, headers=self._headers)
            except httpx.TimeoutException:
                failure, unreadable = f"no answer within {self.timeout:g} s", None
            except httpx.TransportError as err:
                failure, unreadable = f"connection failed: {type(err).__name__}", None
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    failure, unreadable = f"HTTP {status}", None
                    retry_after = response.headers.get("retry-after")
                elif status >= 400:
                    raise EndpointRejected(
                        f"{self.role} at {self.url} refused the request with HTTP {status} "
                        f"(check the model name {self.model!r} and the key in ${self.api_key_env})"
                    )
                else:
                    try:
                        answer = response.json()
                        content = answer["choices"][0]["message"]["content"]
                        if not isinstance(content, str):
                            raise TypeError
                    except (ValueError, KeyError, IndexError, TypeError):
                        failure = "answer is not a chat-completions JSON"
                        unreadable = response.text[:RAW_CHARS]
                    else:
                        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
                        self._count(usage=usage)
                        return ChatReply(content, usage)
            if attempt + 1 < self.max_attempts:
                time.sleep(self._delay(attempt, retry_after))
        if unreadable is not None:
            return ChatReply(None, {}, unreadable)
        raise EndpointUnavailable(
            f"{self.role} at {self.url} did not answer after {self.max_attempts} attempts ({failure})"
        )

    def close(self) -> None:
        self._client.close()
