"""An LLM judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, LiteLLM, ...).

One comparison = one POST {base_url}/chat/completions with the protocol's system prompt, temperature 0 and a fixed
seed, and an `Authorization: Bearer <key>` header whose key is read from the environment variable NAMED by
`api_key_env`. The key lives only in that header: it is not part of `identity()` (hence not in the cache key), not in
any error message, and not in the object's repr.

Transport (httpx, a maintained HTTP client): every attempt has its own timeout (`timeout` seconds for each of
connect / write / read). HTTP 429, 5xx, timeouts, connection errors and a 200 whose body is not a chat-completions
JSON are retried, at most `max_attempts` attempts in all, sleeping backoff_base * 2**i seconds between them (capped at
`backoff_max`; a 429's Retry-After is honoured within that cap). Other 4xx (bad key, unknown model) are not retried.
When every attempt failed to reach the judge, `JudgeUnavailable` is raised (a `UserError`, so the CLI prints one
line); when the judge kept answering with unreadable bodies the comparison becomes "invalid" and is not cached.

The answer itself is read strictly (`verdict.parse_choice`): "A" or "B" after stripping whitespace/punctuation,
anything else ("I think A is better") is "invalid" and counts 0 for the model.

Threads: `compare` is safe to call from several threads at once (the runner's pool in `head_to_head.py`).
"""

from __future__ import annotations

import json
import os
import time

import httpx

from streaming_vlm.errors import UserError
from streaming_vlm.eval.prompts import build_messages
from streaming_vlm.eval.verdict import Verdict, parse_choice

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
RAW_CHARS = 200  # how much of an answer is kept in verdicts for auditing


class JudgeUnavailable(UserError):
    """The judge endpoint could not be reached or kept failing after the bounded retries."""


class JudgeRejected(UserError):
    """The judge endpoint refused the request (4xx other than 429): retrying will not help."""


class OpenAIJudge:
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        *,
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        seed: int = 1234,
        max_tokens: int | None = None,
        concurrency: int = 4,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"judge base URL must start with http:// or https://, got {base_url!r}")
        if max_attempts < 1:
            raise UserError(f"max attempts must be >= 1, got {max_attempts}")
        if timeout <= 0:
            raise UserError(f"judge timeout must be positive, got {timeout}")
        key = os.environ.get(api_key_env, "")
        if not key:
            raise UserError(
                f"environment variable {api_key_env} is not set: the openai judge needs an API key "
                f"(export {api_key_env}=..., or choose another variable with --api-key-env)"
            )
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.seed = seed
        self.max_tokens = max_tokens
        self._headers = {"Authorization": f"Bearer {key}"}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency)),
            trust_env=False,  # a judge on 127.0.0.1 must not go through a proxy from the environment
        )

    def __repr__(self) -> str:
        return f"OpenAIJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def identity(self) -> str:
        return f"openai|{self.model}|{self.base_url}"

    def payload(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> dict:
        body = {
            "model": self.model,
            "messages": build_messages(reference, cand_a, cand_b, protocol),
            "temperature": 0,
            "seed": self.seed,
        }
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    def prompt(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> str:
        return json.dumps(build_messages(reference, cand_a, cand_b, protocol), ensure_ascii=False)

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        delay = self.backoff_base * (2**attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.backoff_max)

    def compare(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> Verdict:
        body = self.payload(reference, cand_a, cand_b, protocol)
        failure, unreadable = "", None
        for attempt in range(self.max_attempts):
            retry_after = None
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
                    raise JudgeRejected(
                        f"judge at {self.url} refused the request with HTTP {status} "
                        f"(check the model name {self.model!r} and the key in ${self.api_key_env})"
                    )
                else:
                    try:
                        content = response.json()["choices"][0]["message"]["content"]
                        if not isinstance(content, str):
                            raise TypeError
                    except (ValueError, KeyError, IndexError, TypeError):
                        failure = "answer is not a chat-completions JSON"
                        unreadable = response.text[:RAW_CHARS]
                    else:
                        return Verdict(parse_choice(content), content[:RAW_CHARS])
            if attempt + 1 < self.max_attempts:
                time.sleep(self._delay(attempt, retry_after))
        if unreadable is not None:
            return Verdict("invalid", f"unreadable answer: {unreadable}", cacheable=False)
        raise JudgeUnavailable(f"judge at {self.url} did not answer after {self.max_attempts} attempts ({failure})")

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
