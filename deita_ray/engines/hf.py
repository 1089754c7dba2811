"""Transformers engine (CPU or GPU): scoring by batched prefill, embedding, and generation.

Scoring (`token_logits`):

Prompts are sorted by length and cut into buckets (at most `batch_size` prompts and
`max_batch_tokens` padded tokens each), left-padded with explicit position ids so that a
padded row computes what it would alone, and only the last position's logits are
materialised (`logits_to_keep=1`). Nothing is ever decoded.

Every Deita prompt starts with the same template tokens, so the bucket's longest common
token prefix is run once and its KV cache shared by all rows (exact: same ids, same
positions); the rows then run only their own suffix. On short prompts that is a third to a
half of the work.

Embedding (`embed`): the causal LM's base model, length-bucketed and left-padded with explicit
positions; `last` pools the hidden state of the last non-pad token (the Deita reference), `mean`
averages the non-pad tokens. Generation (`generate`): `model.generate`, left-padded batches,
greedy at temperature 0, else each request sampled from its own seeded generator; finish reason
`stop` (EOS or a stop string) or `length`.
"""

from __future__ import annotations

import numpy as np

from deita_ray.engines.batching import MIN_SHARED_PREFIX, common_prefix_length, length_buckets, padded_widths
from deita_ray.engines.config import Generation, LLMConfig, PromptTooLong, Sampling
from deita_ray.prompts.chat import prompt_ids, uses_chat


def load_device_map(device) -> str | None:
    """Load weights straight onto an accelerator; on the CPU, transformers' plain load (no accelerate dispatch)."""
    return None if device.type == "cpu" else device.type


class SeededSampler:
    """A logits processor that samples each row with its own seeded generator (temperature, then
    top-p) and leaves only the drawn token, so greedy decoding emits it. transformers' own sampling
    draws from one global generator, whose state depends on the whole batch."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s) & 0x7FFFFFFFFFFFFFFF) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1).cpu()
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs > self.top_p  # keep the smallest set reaching top_p
            sorted_probs[drop] = 0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        chosen = [int(torch.multinomial(row, 1, generator=g)) for row, g in zip(probs, self.generators)]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen)), torch.tensor(chosen)] = 0.0
        return out


class HFEngine:
    name = "hf"

    def __init__(self, config: LLMConfig):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        self.config = config
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        name = config.model_dtype(self.device.type == "cuda")
        dtype = getattr(torch, name) if name != "auto" else "auto"
        # Loaded straight onto the device (a 13B model need not pass through host memory first).
        self.model = AutoModelForCausalLM.from_pretrained(
            config.model, **{"dtype": dtype, "device_map": load_device_map(self.device), **config.engine_kwargs}).eval()
        self._tokenizer = None
        model_config = AutoConfig.from_pretrained(config.model)
        native = getattr(model_config, "max_position_embeddings", None) or 2048
        self.context_length = min(config.max_length or native, native)
        self.pad_id = model_config.pad_token_id if model_config.pad_token_id is not None else 0

    def token_logits(self, prompts: list[list[int]], token_ids: list[int]) -> np.ndarray:
        import torch

        out = np.empty((len(prompts), len(token_ids)), dtype=np.float32)
        lengths = [len(p) for p in prompts]
        if any(n == 0 for n in lengths):
            raise ValueError("empty prompt")
        wanted = torch.tensor(token_ids, device=self.device)
        for bucket in length_buckets(lengths, self.config.batch_size, self.config.max_batch_tokens):
            seqs = [prompts[i] for i in bucket]
            shared = common_prefix_length(seqs) if self.config.share_prefix else 0
            with torch.inference_mode():
                logits = self._last_logits(seqs, shared if shared >= MIN_SHARED_PREFIX else 0)
            out[bucket] = logits.index_select(-1, wanted).float().cpu().numpy()
        return out

    def _last_logits(self, seqs: list[list[int]], shared: int):
        """Logits after each sequence; the first `shared` tokens (identical in all) are run once."""
        import torch

        rows = len(seqs)
        cache, prefix_mask = None, torch.ones((rows, shared), dtype=torch.long)
        if shared:
            prefix = torch.tensor([seqs[0][:shared]], device=self.device)
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(rows)
        tails = [s[shared:] for s in seqs]
        width = max(len(t) for t in tails)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for row, tail in enumerate(tails):
            ids[row, width - len(tail):] = torch.tensor(tail)
            mask[row, width - len(tail):] = 1
        # Positions count real tokens only (prefix first), exactly as for the prompt alone.
        positions = (shared + mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=torch.cat([prefix_mask, mask], -1).to(self.device),
                            position_ids=positions.to(self.device), past_key_values=cache, use_cache=cache is not None,
                            logits_to_keep=1).logits
        return logits[:, -1, :]

    def embed(self, prompts: list[list[int]]) -> np.ndarray:
        """Pooled final-layer hidden states of the base model (no LM head), unnormalised."""
        import torch

        base = self.model.base_model
        lengths = [len(p) for p in prompts]
        out = None
        buckets = length_buckets(lengths, self.config.batch_size, self.config.max_batch_tokens)
        self.last_widths = padded_widths(lengths, buckets)  # what each input cost, padding included
        for bucket in buckets:
            ids, mask = self._left_pad([prompts[i] for i in bucket])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                hidden = base(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), use_cache=False).last_hidden_state.float()
            if self.config.pooling == "last":
                pooled = hidden[:, -1, :]  # left padding: the last position is the last real token
            else:
                m = mask.to(self.device).unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1)
            pooled = pooled.cpu().numpy()
            if out is None:
                out = np.empty((len(prompts), pooled.shape[1]), dtype=np.float32)
            out[bucket] = pooled
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def _left_pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        return ids, mask

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from deita_ray.prompts.tokens import hf_tokenizer

            self._tokenizer = hf_tokenizer(self.config.model)
        return self._tokenizer

    def generate(self, prompts: list, sampling: Sampling, seeds: list[int | None] | None = None) -> list[Generation]:
        """Continuations of user messages (rendered by the chat template when the model has one, see
        `ServingOptions.chat`), of chat message lists, or of token-id lists taken as they are. With sampling, each request draws
        from its own generator seeded by `seeds[i]` (else `sampling.seed`), so a request's text does not
        depend on which others share its batch."""
        import torch

        if sampling.regex:
            raise ValueError("the hf engine cannot constrain decoding to a regex (the judge teacher-forces the "
                             "format on hf instead); use engine vllm")
        chat = uses_chat(self.tokenizer, self.config.chat)
        ids = [prompt_ids(self.tokenizer, p, chat) for p in prompts]
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(ids)
        too_long = [len(p) for p in ids if len(p) >= self.context_length]
        if too_long:
            raise PromptTooLong(f"a prompt of {too_long[0]} tokens does not fit the context of {self.context_length}")
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        results: list[Generation | None] = [None] * len(ids)
        for bucket in length_buckets([len(p) for p in ids], self.config.batch_size, self.config.max_batch_tokens):
            batch, mask = self._left_pad([ids[i] for i in bucket])
            kwargs = dict(do_sample=False)
            if sampling.temperature > 0:
                bucket_seeds = [seeds[i] for i in bucket]
                if all(s is not None for s in bucket_seeds):
                    kwargs["logits_processor"] = [SeededSampler(bucket_seeds, sampling.temperature, sampling.top_p)]
                else:  # unseeded: the global generator, as transformers samples
                    kwargs = dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
            with torch.inference_mode():
                out = self.model.generate(input_ids=batch.to(self.device), attention_mask=mask.to(self.device),
                                          max_new_tokens=sampling.max_new_tokens, pad_token_id=self.pad_id, **kwargs)
            for row, index in enumerate(bucket):
                new = out[row, batch.shape[1]:].tolist()
                results[index] = self._finish(new, eos, sampling)
                results[index].prompt_tokens = len(ids[index])
        return results

    def _finish(self, new: list[int], eos: set, sampling: Sampling) -> Generation:
        cut = next((i for i, t in enumerate(new) if t in eos), None)
        tokens = new[:cut] if cut is not None else new
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        reason = "stop" if cut is not None else "length"
        for stop in sampling.stop:
            if stop in text:
                text, reason = text[: text.index(stop)], "stop"
        return Generation(text=text, token_ids=tokens, finish_reason=reason)
