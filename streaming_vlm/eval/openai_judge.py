"""An LLM judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, LiteLLM, ...).

One comparison = one POST {base_url}/chat/completions with the protocol's system prompt, temperature 0 and a fixed
seed, sent through the shared `chat_client.ChatClient` (timeouts, bounded retries on 429/5xx, the key read from the
environment variable NAMED by `api_key_env` and kept only in the request header). The key is not part of
`identity()` (hence not in the cache key), not in any error message, and not in the object's repr.

When every attempt failed to reach the judge, `JudgeUnavailable` is raised (a `UserError`, so the CLI prints one
line); a refused request (4xx other than 429) raises `JudgeRejected`; when the judge kept answering with unreadable
bodies the comparison becomes "invalid" and is not cached.

The answer itself is read strictly (`verdict.parse_choice`): "A" or "B" after stripping whitespace/punctuation,
anything else ("I think A is better") is "invalid" and counts 0 for the model.

Threads: `compare` is safe to call from several threads at once (the runner's pool in `head_to_head.py`).
"""

from __future__ import annotations

import json

from streaming_vlm.eval.chat_client import ChatClient, EndpointRejected, EndpointUnavailable
from streaming_vlm.eval.prompts import build_messages
from streaming_vlm.eval.verdict import Verdict, parse_choice

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
RAW_CHARS = 200  # how much of an answer is kept in verdicts for auditing

JudgeUnavailable = EndpointUnavailable  # the judge could not be reached or kept failing after the bounded retries
JudgeRejected = EndpointRejected  # the judge refused the request: retrying will not help


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
        self._chat = ChatClient(
            base_url,
            model,
            api_key_env,
            role="judge",
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            concurrency=concurrency,
        )
        self.base_url = self._chat.base_url
        self.url = self._chat.url
        self.model = model
        self.api_key_env = api_key_env
        self.seed = seed
        self.max_tokens = max_tokens

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

    def compare(self, reference: str, cand_a: str, cand_b: str, protocol: str) -> Verdict:
        reply = self._chat.complete(self.payload(reference, cand_a, cand_b, protocol))
        if reply.content is None:
            return Verdict("invalid", f"unreadable answer: {reply.unreadable}", cacheable=False)
        return Verdict(parse_choice(reply.content), reply.content[:RAW_CHARS])

    def usage(self) -> dict:
        return self._chat.usage()

    def close(self) -> None:
        self._chat.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
