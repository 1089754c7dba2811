"""The original Deita scorer's behaviour, kept as the yardstick for tests and benchmarks.

One prompt at a time through `generate` (here 2 new tokens; the reference asks for 512),
read `scores[0]` at the digit ids, softmax, expected value; on failure it returns 3.0, which
we reproduce only to show the difference. Not used by the pipeline.

    python -c "from deita_ray.reference import ReferenceScorer; print(ReferenceScorer('models/scorer-quality').score('...'))"
"""

from __future__ import annotations

import numpy as np

from deita_ray.engines.base import digit_token_ids, load_tokenizer
from deita_ray.engines.hf import load_device_map


class ReferenceScorer:
    def __init__(self, model: str, max_new_tokens: int = 2, dtype: str = "float32", device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer = load_tokenizer(model)
        self.digit_ids = digit_token_ids(self.tokenizer)
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype),
                                                          device_map=load_device_map(self.device)).eval()
        self.max_new_tokens = max_new_tokens

    def digit_logits(self, prompt: str) -> np.ndarray:
        import torch

        input_ids = self.tokenizer.encode(prompt, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=self.max_new_tokens, do_sample=False, output_scores=True,
                                      return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
        return out.scores[0][0, self.digit_ids].float().cpu().numpy()

    def score(self, prompt: str) -> float:
        logits = self.digit_logits(prompt).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return float(np.sum(np.arange(1, 7) * probs))
