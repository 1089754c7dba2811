"""Reading pools: formats, quarantine with reasons, reconciled counts, stable ids, chunking, fsspec URIs."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deita_ray.io.reader import InputError, plan_reads, read_all


def test_sample_pool_reads_and_reconciles(pool_dir):
    manifest = json.loads((pool_dir / "_manifest.json").read_text())
    good, bad = read_all(plan_reads([str(pool_dir)]))
    assert good.num_rows == manifest["samples"]
    assert bad.num_rows == manifest["malformed"]
    assert good.num_rows + bad.num_rows == manifest["rows"]
    assert set(good.column("source_format").to_pylist()) == {"sharegpt", "alpaca", "messages"}
    assert max(good.column("num_turns").to_pylist()) > 1  # multi-turn samples are there
    assert set(bad.column("stage").to_pylist()) == {"read"}
    reasons = " | ".join(bad.column("reason").to_pylist())
    for expected in ("malformed JSON", "must be a JSON object", "missing field", "must be a string", "unknown role",
                     "is empty", "does not alternate", "not valid UTF-8", "ends on a human turn"):
        assert expected in reasons
    assert all(bad.column("raw").to_pylist()) and all(bad.column("id").to_pylist())


def test_ids_are_stable_and_unique(pool_dir, tmp_path):
    from deita_ray.tools.sample_pool import make_pool

    first, _ = read_all(plan_reads([str(pool_dir)]))
    again, _ = read_all(plan_reads([str(pool_dir)]))
    assert first.column("id").to_pylist() == again.column("id").to_pylist()
    make_pool(tmp_path / "copy", samples=300, seed=7)  # regenerated pool, other directory: same ids
    regenerated, _ = read_all(plan_reads([str(tmp_path / "copy")]))
    assert sorted(regenerated.column("id").to_pylist()) == sorted(first.column("id").to_pylist())
    ids = first.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert any(i.startswith("sg-") for i in ids)  # own ids kept


def test_jsonl_chunks_neither_lose_nor_double_rows(pool_dir):
    whole, whole_bad = read_all(plan_reads([str(pool_dir / "sharegpt.jsonl")]))
    tasks = plan_reads([str(pool_dir / "sharegpt.jsonl")], chunk_bytes=997)  # cuts through lines everywhere
    assert len(tasks) > 50
    chunked, chunked_bad = read_all(tasks)
    assert chunked.column("id").to_pylist() == whole.column("id").to_pylist()
    assert chunked_bad.column("id").to_pylist() == whole_bad.column("id").to_pylist()


def test_parquet_and_forced_format(tmp_path):
    rows = [{"instruction": "Q1", "input": "", "output": "A1"}, {"instruction": "Q2", "input": "ctx", "output": "A2"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    good, bad = read_all(plan_reads([str(tmp_path / "a.parquet")], input_format="alpaca"))
    assert good.num_rows == 2 and bad.num_rows == 0
    assert good.column("conversations").to_pylist()[1][0]["value"] == "Q2\nctx"


def test_json_array_with_invalid_utf8_quarantines_the_row(tmp_path):
    path = tmp_path / "p.json"
    path.write_bytes(b'[{"instruction": "ok", "output": "fine"}, {"instruction": "caf\xe9", "output": "x"}]')
    good, bad = read_all(plan_reads([str(path)]))
    assert good.num_rows == 1 and bad.num_rows == 1
    assert "not valid UTF-8" in bad.column("reason")[0].as_py()


def test_fsspec_memory_filesystem():
    import fsspec

    fs = fsspec.filesystem("memory")
    lines = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(5)]
    with fs.open("/pools/x.jsonl", "w") as f:
        f.write("\n".join(json.dumps(r) for r in lines) + "\nnot json\n")
    good, bad = read_all(plan_reads(["memory://pools/"]))
    assert good.num_rows == 5 and bad.num_rows == 1
    assert good.column("source")[0].as_py().startswith("memory://")


def test_wrong_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        plan_reads([str(tmp_path / "nope.jsonl")])
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unsupported file type"):
        plan_reads([str(tmp_path / "data.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .jsonl/.json/.parquet/.arrow files"):
        plan_reads([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="input-format"):
        plan_reads([str(tmp_path)], input_format="csv")


def test_corrupt_files_fail_clearly(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(InputError, match="cannot read"):
        plan_reads([str(tmp_path / "bad.parquet")])
    (tmp_path / "object.json").write_text('{"data": []}')
    with pytest.raises(InputError, match="must be a JSON array"):
        plan_reads([str(tmp_path / "object.json")])
    (tmp_path / "bad.json").write_text('[{"instruction": "x", ')
    with pytest.raises(InputError, match="not valid JSON"):
        read_all(plan_reads([str(tmp_path / "bad.json")]))


def _rows(n, prefix):
    return [{"id": f"{prefix}{i}", "instruction": f"q {prefix}{i}", "output": f"a {prefix}{i}"} for i in range(n)]


def test_compressed_inputs_and_files_not_read(tmp_path):
    """A directory with plain, upper-case and compressed files: every row is read; what is not read is named."""
    import bz2
    import gzip

    import zstandard

    def jsonl(rows):
        return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()

    (tmp_path / "a.jsonl").write_bytes(jsonl(_rows(3, "a")))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(_rows(4, "b"))))
    (tmp_path / "c.JSONL").write_bytes(jsonl(_rows(2, "c")))
    (tmp_path / "d.json.zst").write_bytes(zstandard.ZstdCompressor().compress(json.dumps(_rows(5, "d")).encode()))
    (tmp_path / "e.jsonl.bz2").write_bytes(bz2.compress(jsonl(_rows(6, "e"))))
    (tmp_path / "notes.txt").write_text("not a pool")
    (tmp_path / "_manifest.json").write_text("{}")  # metadata by convention: skipped silently
    not_read = []
    tasks = plan_reads([str(tmp_path)], chunk_bytes=10, not_read=not_read)  # compressed files are never cut
    good, bad = read_all(tasks)
    assert bad.num_rows == 0 and good.num_rows == 3 + 4 + 2 + 5 + 6
    assert sorted(i[0] for i in good.column("id").to_pylist()) == sorted("a" * 3 + "b" * 4 + "c" * 2 + "d" * 5 + "e" * 6)
    assert not_read == [str(tmp_path / "notes.txt")]


def test_byte_order_marks_are_read_not_fatal(tmp_path):
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(_rows(3, "j")).encode())
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in _rows(2, "l")).encode())
    good, bad = read_all(plan_reads([str(tmp_path)]))
    assert bad.num_rows == 0 and sorted(good.column("id").to_pylist()) == ["j0", "j1", "j2", "l0", "l1"]


def test_lone_surrogate_id_is_quarantined_not_fatal(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "f1", "instruction": "q", "output": "a"}\n'
                    '{"id": "f2\\ud800", "instruction": "q", "output": "a"}\n'
                    '{"id": "f3", "instruction": "q", "output": "a"}\n')
    good, bad = read_all(plan_reads([str(path)]))
    assert good.column("id").to_pylist() == ["f1", "f3"]
    assert bad.num_rows == 1 and "lone surrogate" in bad.column("reason")[0].as_py()
    pq.write_table(bad, tmp_path / "q.parquet")  # the quarantine row itself is storable


def test_broken_json_array_fails_while_planning(tmp_path):
    (tmp_path / "bad.json").write_text('[{"instruction": "x", "output": "y"}, {"instruction": ')
    with pytest.raises(InputError, match=r"bad.json is not valid JSON"):
        plan_reads([str(tmp_path)])


def test_a_hugging_face_save_to_disk_directory_reads_as_a_pool(tmp_path):
    """`datasets.save_to_disk` writes Arrow stream files beside JSON metadata: the records are read, the metadata
    is not taken for a pool; a DatasetDict's splits are read one by one or together."""
    datasets = pytest.importorskip("datasets")
    rows = [{"id": f"s{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(7)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    good, bad = read_all(plan_reads([str(tmp_path / "one")]))
    assert sorted(good.column("id").to_pylist()) == [f"s{i}" for i in range(7)] and bad.num_rows == 0
    assert set(good.column("source_format").to_pylist()) == {"sharegpt"}
    alpaca = datasets.Dataset.from_list([{"instruction": "Say hi.", "input": "", "output": "Hi."}] * 3)
    datasets.DatasetDict({"train": alpaca, "test": alpaca.select([0])}).save_to_disk(str(tmp_path / "dict"))
    assert read_all(plan_reads([str(tmp_path / "dict" / "train")]))[0].num_rows == 3
    assert read_all(plan_reads([str(tmp_path / "dict")]))[0].num_rows == 4


def test_arrow_ipc_files_and_hf_urls_read_through_fsspec(tmp_path):
    """An Arrow IPC file (Feather v2) reads like Parquet; an `hf://datasets/...` URL goes through fsspec like any
    other (here a local stand-in for the hub's filesystem: no network)."""
    import fsspec
    import pyarrow.feather as feather
    from fsspec.implementations.memory import MemoryFileSystem

    table = pa.table({"instruction": ["a?", "b?"], "output": ["A.", "B."]})
    feather.write_feather(table, str(tmp_path / "pool.arrow"))
    assert read_all(plan_reads([str(tmp_path / "pool.arrow")]))[0].column("source_format").to_pylist() == ["alpaca"] * 2

    class HubStandIn(MemoryFileSystem):
        protocol = ("hf",)
        store, pseudo_dirs = {}, [""]  # its own, not memory://'s

    fsspec.register_implementation("hf", HubStandIn, clobber=True)
    try:
        with fsspec.open("hf://datasets/org/pool/data/train.jsonl", "w") as f:
            f.write("\n".join(json.dumps({"instruction": f"q{i}", "output": "a"}) for i in range(5)) + "\n")
        good, _ = read_all(plan_reads(["hf://datasets/org/pool/data/"]))
        assert good.num_rows == 5 and all(s.startswith("hf://datasets/org/pool/") for s in good.column("source").to_pylist())
    finally:
        fsspec.register_implementation("hf", "huggingface_hub.HfFileSystem", clobber=True)
