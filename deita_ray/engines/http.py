"""OpenAI-compatible HTTP engine (generation only): a hosted judge like the paper's, or a `vllm serve` you run.

    engine = make_engine(LLMConfig(model="gpt-4o-mini", engine="http", api_base="https://api.openai.com/v1"))
    engine.generate(["Rewrite this ..."], Sampling(temperature=0.7, max_new_tokens=512))

Requests go to `/chat/completions` (the prompt as one user message; the default, since hosted models
are chat models) or, with `chat=False`, to `/completions` (raw text or token ids, as `vllm serve`
accepts), through httpx with at most `max_in_flight` requests open per engine. What each answer means:
- `request_timeout` bounds a request as a whole, retries and waits included: every socket read and
  write gets only what is left of it (a body that drips a byte a second ends there), and a wait the
  server asks for (Retry-After) that does not fit in it ends the request at once;
- 429, 5xx, timeouts, refused or dropped connections, and a 200 whose body is not a completion (HTML,
  bad JSON, no choices, a body over 64 MiB) are retried with exponential backoff up to `max_retries` times, then raised as
  TimeoutError or ConnectionError: transient, so a resumed run retries the row;
- 401/403, 404 and a redirect raise EngineUnusableError (a wrong key, URL or model name is the command's
  problem, not the row's): the stage stops, the command exits non-zero naming the key variable, nothing is
  quarantined, and a rerun after the fix does every row;
- a prompt over the model's context raises PromptTooLong; any other 4xx raises ValueError with the
  server's message (permanent: the request itself is bad).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import threading
import time

from deita_ray.engines.config import EngineUnusableError, Generation, LLMConfig, PromptTooLong, Sampling
from deita_ray.prompts.chat import is_messages

RETRIED_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
UNUSABLE_STATUS = frozenset({401, 403, 404})
MAX_BACKOFF_S = 30.0
MAX_BODY_BYTES = 64 << 20  # a completion is never this large; a body that is, is read no further

_deadline = threading.local()  # the end of the request this thread is making (time.monotonic())


class _Retry(Exception):
    """One attempt failed in a way worth another attempt."""

    def __init__(self, failure: type, message: str, wait: float | None = None):
        super().__init__(message)
        self.failure, self.wait = failure, wait


def _left(timeout: float | None) -> float | None:
    """A socket operation's timeout, cut to what is left of this thread's request."""
    import httpcore

    end = getattr(_deadline, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's time is up")
    return left if timeout is None else min(timeout, left)


def _deadline_backend():
    """httpcore's own network backend, with every connect, read and write bounded by the request's deadline
    (httpx's timeouts apply per operation, so a server dripping bytes could hold a request forever)."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, stream):
            self.stream = stream

        def read(self, max_bytes, timeout=None):
            return self.stream.read(max_bytes, _left(timeout))

        def write(self, buffer, timeout=None):
            return self.stream.write(buffer, _left(timeout))

        def close(self):
            self.stream.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self.stream.start_tls(ssl_context, server_hostname, _left(timeout)))

        def get_extra_info(self, info):
            return self.stream.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self):
            self.backend = httpcore.SyncBackend()

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return Stream(self.backend.connect_tcp(host, port, _left(timeout), local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return Stream(self.backend.connect_unix_socket(path, _left(timeout), socket_options))

        def sleep(self, seconds):
            self.backend.sleep(seconds)

    return Backend()


def _client(max_connections: int):
    import httpx

    transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=max_connections,
                                                        max_keepalive_connections=max_connections))
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):  # pragma: no cover - an httpx we have not read
        raise RuntimeError("this httpx version keeps its connection pool elsewhere; pin httpx>=0.27,<1")
    pool._network_backend = _deadline_backend()
    return httpx.Client(transport=transport, timeout=None)


class HTTPEngine:
    name = "http"

    def __init__(self, config: LLMConfig):
        self.config = config
        self.context_length = config.max_length or 1 << 30  # the server enforces its own
        self.chat = config.chat is not False
        self.url = config.api_base.rstrip("/") + ("/chat/completions" if self.chat else "/completions")
        self.key = os.environ.get(config.api_key_env) or None
        self.client = _client(config.max_in_flight)
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
            if is_messages(prompt):
                body["messages"] = [{"role": m["role"], "content": m["content"]} for m in prompt]
            elif isinstance(prompt, str):
                body["messages"] = [{"role": "user", "content": prompt}]
            else:
                raise ValueError("the chat API takes text or messages; use chat=False to send token ids")
        elif is_messages(prompt):
            raise ValueError("chat messages need the chat API (chat: true)")
        else:
            body["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
        return body

    # ------------------------------------------------------------ one attempt, then the retry policy

    def _attempt(self, data: bytes, headers: dict) -> Generation:
        import httpx

        try:
            with self.client.stream("POST", self.url, content=data, headers=headers) as response:
                body = bytearray()
                for chunk in response.iter_bytes():  # a body without end must not fill the memory
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _Retry(ConnectionError, f"answer larger than {MAX_BODY_BYTES >> 20} MiB: not a completion")
        except httpx.TimeoutException as exc:
            raise _Retry(TimeoutError, f"no complete answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:  # refused, reset, dropped mid-body, bad chunking
            raise _Retry(ConnectionError, f"connection failed ({type(exc).__name__}: {exc})") from None
        text = body.decode("utf-8", "replace")
        detail = text[:300]
        if 300 <= response.status_code < 400:
            raise EngineUnusableError(f"{self.url}: HTTP {response.status_code}, redirected to "
                                      f"{response.headers.get('Location')!r}: give that as --api-base")
        if response.status_code in UNUSABLE_STATUS:
            if response.status_code == 404:
                raise EngineUnusableError(f"{self.url}: HTTP 404 (check --api-base and the model name "
                                     f"{self.config.model!r}): {detail}")
            where = f"${self.config.api_key_env} is not set" if not self.key else \
                f"the key in ${self.config.api_key_env} was refused"
            raise EngineUnusableError(f"{self.url}: HTTP {response.status_code} (authentication failed: {where}): {detail}")
        if response.status_code in RETRIED_STATUS:
            retry_after = response.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            raise _Retry(TimeoutError if response.status_code in (408, 504) else ConnectionError,
                         f"HTTP {response.status_code}: {detail}", wait)
        if response.status_code >= 400:
            if "context length" in detail.lower() or "context_length_exceeded" in detail:
                raise PromptTooLong(f"{self.url}: HTTP {response.status_code}: {detail}")
            raise ValueError(f"{self.url}: HTTP {response.status_code}: {detail}")
        return self._parse(response.status_code, text)

    def _parse(self, status: int, text: str) -> Generation:
        """A completion from a 2xx answer; anything else (an HTML page from a proxy, cut JSON, no choices)
        is the server's hiccup, worth another attempt."""
        try:
            answer = json.loads(text)
            choice = answer["choices"][0]
            content = choice["message"]["content"] if self.chat else choice["text"]
            if content is not None and not isinstance(content, str):
                raise TypeError(content)
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry(ConnectionError, f"HTTP {status} without a completion: {text[:200]!r}") from None
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        tokens, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        return Generation(text=content or "", token_ids=[], finish_reason="length" if choice.get("finish_reason") ==
                          "length" else "stop", n_tokens=tokens if isinstance(tokens, int) and tokens >= 0 else None,
                          prompt_tokens=prompt if isinstance(prompt, int) and prompt >= 0 else None)

    def _request(self, body: dict) -> Generation:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        timeout = self.config.request_timeout
        end = time.monotonic() + timeout
        attempt = 0
        while True:
            _deadline.end = end
            try:
                return self._attempt(data, headers)
            except _Retry as retry:
                failure, message, wait = retry.failure, str(retry), retry.wait
            finally:
                _deadline.end = None
            attempt += 1
            left = end - time.monotonic()
            said = f"{self.url}: {message} ({attempt} attempt{'s' if attempt > 1 else ''}"
            if attempt > self.config.max_retries:
                raise failure(f"{said}, no retries left)")
            if left <= 0:
                raise TimeoutError(f"{said}; request_timeout of {timeout:g} s reached)")
            # Exponential backoff with jitter, so many actors retrying do not return in lockstep.
            pause = wait if wait is not None else min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            if pause > left:
                raise failure(f"{said}; the next try would come after {pause:g} s but only {left:.1f} s of "
                              f"request_timeout {timeout:g} s are left)")
            time.sleep(pause)

    def _one(self, prompt, sampling: Sampling) -> Generation:
        return self._request(self._body(prompt, sampling))

    def submit(self, prompt, sampling: Sampling) -> concurrent.futures.Future:
        return self.pool.submit(self._one, prompt, sampling)

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(prompts)
        futures = [self.submit(p, sampling.for_request(s)) for p, s in zip(prompts, seeds)]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
