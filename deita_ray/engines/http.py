"""OpenAI-compatible HTTP engine (generation only): a hosted judge like the paper's, or a `vllm serve` you run.

    engine = make_engine(LLMConfig(model="gpt-4o-mini", engine="http", api_base="https://api.openai.com/v1"))
    engine.generate(["Rewrite this ..."], Sampling(temperature=0.7, max_new_tokens=512))

Requests go to `/chat/completions` (the prompt as one user message; the default, since hosted
models are chat models) or, with `chat=False`, to `/completions` (raw text or token ids, as
`vllm serve` accepts). At most `max_in_flight` requests are open at once per engine. 429, 5xx,
timeouts and dropped connections are retried with exponential backoff (honouring Retry-After) up to
`max_retries` times, then raised as TimeoutError/ConnectionError (transient: a resumed run retries
the row). 401/403 raise PermissionError at once, naming the key variable; a prompt over the model's context
raises PromptTooLong; other 4xx raise ValueError with the server's message (permanent: the request
itself is bad). Standard library only.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request

from deita_ray.engines.config import Generation, LLMConfig, PromptTooLong, Sampling

RETRIED_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class HTTPEngine:
    name = "http"

    def __init__(self, config: LLMConfig):
        self.config = config
        self.context_length = config.max_length or 1 << 30  # the server enforces its own
        self.chat = config.chat is not False
        self.url = config.api_base.rstrip("/") + ("/chat/completions" if self.chat else "/completions")
        self.key = os.environ.get(config.api_key_env) or None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.max_in_flight,
                                                          thread_name_prefix="deita-http")

    def _body(self, prompt, sampling: Sampling) -> dict:
        body = {"model": self.config.model, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.regex:  # vLLM's structured outputs; other servers reject or ignore the field
            body["structured_outputs"] = {"regex": sampling.regex}
        if self.chat:
            if not isinstance(prompt, str):
                raise ValueError("the chat API takes text prompts; use chat=False to send token ids")
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
        return body

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        attempt = 0
        while True:
            wait = None
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.config.request_timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code in (401, 403):
                    where = f"${self.config.api_key_env} is not set" if not self.key else \
                        f"the key in ${self.config.api_key_env} was refused"
                    raise PermissionError(f"{self.url}: HTTP {exc.code} (authentication failed: {where}): {detail}") from None
                if exc.code not in RETRIED_STATUS:
                    if "context length" in detail.lower() or "context_length_exceeded" in detail:
                        raise PromptTooLong(f"{self.url}: HTTP {exc.code}: {detail}") from None
                    raise ValueError(f"{self.url}: HTTP {exc.code}: {detail}") from None
                failure = TimeoutError if exc.code in (408, 504) else ConnectionError
                message = f"{self.url}: HTTP {exc.code} after {attempt + 1} attempts: {detail}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = float(retry_after)
            except (TimeoutError, socket.timeout) as exc:
                failure, message = TimeoutError, f"{self.url}: no answer within {self.config.request_timeout:g} s " \
                                                 f"after {attempt + 1} attempts ({exc})"
            except (urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    failure = TimeoutError
                else:
                    failure = ConnectionError
                message = f"{self.url}: cannot connect after {attempt + 1} attempts ({reason})"
            if attempt >= self.config.max_retries:
                raise failure(message)
            # Exponential backoff with jitter, so many actors retrying do not return in lockstep.
            time.sleep(wait if wait is not None else min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random() / 2))
            attempt += 1

    def _one(self, prompt, sampling: Sampling) -> Generation:
        answer = self._post(self._body(prompt, sampling))
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{self.url}: unexpected answer: {json.dumps(answer)[:300]}") from None
        usage = answer.get("usage") or {}
        return Generation(text=text or "", token_ids=[], finish_reason="length" if choice.get("finish_reason") == "length"
                          else "stop", n_tokens=usage.get("completion_tokens"))

    def submit(self, prompt, sampling: Sampling) -> concurrent.futures.Future:
        return self.pool.submit(self._one, prompt, sampling)

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(prompts)
        futures = [self.submit(p, sampling.for_request(s)) for p, s in zip(prompts, seeds)]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
