"""The evolution stage: Evol Complexity or Evol Quality chains of one seed each, over Arrow batches.

Plain Python, no Ray: `EvolveStage("complexity", LLMConfig(...), Sampling(...))(table)` appends
one chain per seed row: `instruction` (the seed instruction I0), `variants` (I0..Ik or R0..Rk, the
seed first), `operations` (per variant, null for the seed), `rounds_completed`, `stop_reason`
("completed", or the round that was eliminated and why), `stop_rule` (the same without the
round, for counting), `eliminated_text` and
`failed_attempts` (every rewrite that was not kept: round, attempt, operation, reason, text) and
`generated_tokens`. A round whose rewrite is not a usable variant (prompts/evol.failure_reason) is
tried again with a new sampling seed, up to `retries` times, before the chain ends: chains reach
M+1 variants whenever the model can write them. All rounds of a chain run in this one call
(notes/evol-judge.md §1-3):
- an engine with `submit` (vllm's async engine, http) advances every chain on its own: a chain's
  next round is queued the moment its previous one returns, so the engine never waits for the
  slowest chain of a round, and several batches of one actor (Ray Data threads) share it;
- otherwise (hf, fake) one batched `generate` per round over the chains still alive.
The operation of each round and each request's sampling seed are drawn from (seed id, round, attempt),
so a chain comes out the same whatever the batching, reruns or the worker it lands on. A chain the
engine fails on is marked failed (quarantined with its class by the runner).
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field

import pyarrow as pa

from deita_ray.engines.base import close_engine, make_engine, start_engine
from deita_ray.engines.config import Generation, LLMConfig, PromptTooLong, Sampling
from deita_ray.engines.flops import shape_of_engine
from deita_ray.io.formats import turn_pairs
from deita_ray.io.quarantine import PERMANENT, mark_failures
from deita_ray.stages.failures import classify, each_or_one
from deita_ray.prompts import evol

COMPLETED = "completed"
ATTEMPT = pa.struct([("round", pa.int32()), ("attempt", pa.int32()), ("operation", pa.string()),
                     ("reason", pa.string()), ("text", pa.string())])


@dataclass
class Chain:
    seed_id: str
    instruction: str
    variants: list[str]
    operations: list[str | None] = field(default_factory=lambda: [None])
    stop_reason: str | None = None
    stop_rule: str | None = None      # "completed" or the elimination rule alone (for counting)
    eliminated_text: str | None = None
    generated_tokens: int = 0
    flops: float | None = None        # model FLOPs of every request (None: not known, e.g. a server's model)
    failure: tuple[str, str] | None = None
    attempt: int = 0                  # of the round in progress (0: its first try)
    failed_attempts: list[dict] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.stop_reason is None and self.failure is None


class EvolveStage:
    """Evolves Arrow batches of seeds. The constructor is cheap; setup() builds the engine on the
    worker; teardown() frees it. Safe to call from several threads at once (one engine shared)."""

    def __init__(self, mode: str, config: LLMConfig, sampling: Sampling, rounds: int = evol.ROUNDS, seed: int = 0,
                 engine=None, retries: int = evol.RETRIES, wizardlm_rules: bool = False):
        if mode not in evol.MODES:
            raise ValueError(f"mode must be one of {evol.MODES}, got {mode!r}")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.mode, self.config, self.sampling, self.rounds, self.seed = mode, config, sampling, rounds, seed
        self.retries, self.wizardlm_rules = retries, wizardlm_rules
        self.engine = engine
        self.shape = None

    def setup(self) -> None:
        self.shape = shape_of_engine(self.config)
        if self.engine is None:
            self.engine = make_engine(self.config, "generate")
            start_engine(self.engine, "submit" if hasattr(self.engine, "submit") else "generate")

    def teardown(self) -> None:
        if self.engine is not None:
            close_engine(self.engine)
        self.engine = None

    # ------------------------------------------------------------ one round of one chain

    def _request(self, chain: Chain) -> tuple[str, Sampling, str]:
        k = len(chain.variants)
        op = evol.operation(chain.seed_id, k, self.mode)
        if self.mode == "complexity":
            prompt = evol.rewrite_prompt("complexity", op, chain.variants[-1])
        else:
            prompt = evol.rewrite_prompt("quality", op, chain.instruction, chain.variants[-1])
        seed = evol.request_seed(self.seed, self.mode, chain.seed_id, k, chain.attempt)
        return prompt, self.sampling.for_request(seed), op

    def _advance(self, chain: Chain, op: str, generation: Generation) -> None:
        k = len(chain.variants)
        chain.generated_tokens += generation.tokens
        if self.shape is not None and generation.prompt_tokens is not None:
            chain.flops = (chain.flops or 0.0) + self.shape.generation(generation.prompt_tokens, generation.tokens)
        text = evol.extract_rewrite(self.mode, generation.text)
        reason = evol.failure_reason(self.mode, text, chain.variants[-1], generation.finish_reason,
                                     self.wizardlm_rules)
        if reason is not None:  # kept with its reason; the round is tried again, or the chain ends (notes §3)
            chain.failed_attempts.append({"round": k, "attempt": chain.attempt, "operation": op, "reason": reason,
                                          "text": text})
            if chain.attempt < self.retries:
                chain.attempt += 1
                return
            tries = f" ({chain.attempt + 1} attempts)" if chain.attempt else ""
            chain.stop_reason, chain.stop_rule, chain.eliminated_text = f"round {k} ({op}): {reason}{tries}", reason, text
            return
        chain.attempt = 0
        chain.variants.append(text)
        chain.operations.append(op)
        if len(chain.variants) > self.rounds:
            chain.stop_reason = chain.stop_rule = COMPLETED

    def _end(self, chain: Chain, exc: PromptTooLong) -> None:
        """The next rewrite prompt does not fit the model: the chain ends with what it has (like an
        elimination), rather than losing its variants to quarantine."""
        k = len(chain.variants)
        chain.stop_reason, chain.stop_rule = f"round {k}: {exc}", "rewrite prompt does not fit the context"

    # ------------------------------------------------------------ all rounds of many chains

    def _run_batched(self, chains: list[Chain]) -> None:
        while True:
            alive = [c for c in chains if c.alive]
            if not alive:
                return
            requests = [self._request(c) for c in alive]
            results = each_or_one(lambda reqs: self.engine.generate([r[0] for r in reqs], self.sampling,
                                                                    seeds=[r[1].seed for r in reqs]), requests)
            for chain, (_, _, op), result in zip(alive, requests, results):
                self._settle(chain, op, result)

    def _settle(self, chain: Chain, op: str, result) -> None:
        """One round's outcome: a rewrite to judge, a prompt too long for the model (the chain ends with what it
        has), or the engine's failure on this chain (stages/failures.py)."""
        if isinstance(result, PromptTooLong):
            self._end(chain, result)
        elif isinstance(result, Exception):
            chain.failure = classify(result)
        else:
            self._advance(chain, op, result)

    def _run_async(self, chains: list[Chain]) -> None:
        pending: dict[concurrent.futures.Future, tuple[Chain, str]] = {}

        def queue(chain: Chain) -> None:
            prompt, sampling, op = self._request(chain)
            try:
                pending[self.engine.submit(prompt, sampling)] = (chain, op)
            except Exception as exc:
                self._settle(chain, op, exc)

        for chain in chains:
            if chain.alive:
                queue(chain)
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                chain, op = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:
                    result = exc
                self._settle(chain, op, result)
                if chain.alive:
                    queue(chain)

    def evolve(self, chains: list[Chain]) -> list[Chain]:
        self.setup()
        if self.rounds and any(c.alive for c in chains):
            (self._run_async if hasattr(self.engine, "submit") else self._run_batched)(chains)
        return chains

    # ------------------------------------------------------------ Arrow in, Arrow out

    def seed_chain(self, seed_id: str, conversation: list[dict]) -> Chain:
        pairs = turn_pairs(conversation)  # the first turn is the seed (multi-turn seeds: later turns are not evolved)
        instruction, response = pairs[0] if pairs else ("", "")
        chain = Chain(seed_id, instruction, [instruction if self.mode == "complexity" else response])
        if not pairs:
            chain.failure = ("seed has no (instruction, response) turn", PERMANENT)
        return chain

    def __call__(self, table: pa.Table) -> pa.Table:
        chains = [self.seed_chain(i, c) for i, c in zip(table.column("id").to_pylist(),
                                                         table.column("conversations").to_pylist())]
        self.evolve(chains)
        columns = {
            "mode": pa.array([self.mode] * len(chains), pa.string()),
            "instruction": pa.array([c.instruction for c in chains], pa.string()),
            "variants": pa.array([c.variants for c in chains], pa.list_(pa.string())),
            "operations": pa.array([c.operations for c in chains], pa.list_(pa.string())),
            "rounds_completed": pa.array([len(c.variants) - 1 for c in chains], pa.int32()),
            "stop_reason": pa.array([c.stop_reason for c in chains], pa.string()),
            "stop_rule": pa.array([c.stop_rule for c in chains], pa.string()),
            "eliminated_text": pa.array([c.eliminated_text for c in chains], pa.string()),
            "failed_attempts": pa.array([c.failed_attempts for c in chains], pa.list_(ATTEMPT)),
            "generated_tokens": pa.array([c.generated_tokens for c in chains], pa.int64()),
            "generation_flops": pa.array([c.flops for c in chains], pa.float64()),
        }
        for name, values in columns.items():
            table = table.append_column(name, values)
        return mark_failures(table, [c.failure for c in chains])
