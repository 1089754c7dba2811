"""The selected rows in selection order, read back from the scored parts, and written as ShareGPT JSONL.

    rows = selected_rows("out/scored", ids)           # full scored rows + selection_rank
    write_sharegpt_jsonl(rows, "out/selection/selected.jsonl")
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deita_ray.io import fs
from deita_ray.io.writer import arrow_filesystem, list_parts


def in_selection_order(rows: pa.Table, selected_ids: list[str]) -> pa.Table:
    rank = {sid: r for r, sid in enumerate(selected_ids)}
    ranks = [rank[i] for i in rows.column("id").to_pylist()]
    rows = rows.append_column("selection_rank", pa.array(ranks, pa.int64()))
    return rows.take(pc.sort_indices(rows.column("selection_rank")))


def selected_rows(scored: str, selected_ids: list[str], batch_rows: int = 2048) -> pa.Table:
    """Full scored rows of the selected ids, in selection order. Parts are streamed in small
    batches and filtered as they come, so the driver's peak is one batch plus the selected rows,
    whatever the size of a part (a whole part with its texts can be hundreds of MB)."""
    wanted = pa.array(selected_ids, pa.string())
    pool = pa.default_memory_pool()
    found = []
    filesystem = arrow_filesystem(scored)
    for part in list_parts(scored):
        with filesystem.open_input_file(part) as f:
            reader = pq.ParquetFile(f)
            if not pc.any(pc.is_in(reader.read(columns=["id"]).column("id"), value_set=wanted)).as_py():
                continue  # decode a part's texts only when it holds selected rows
            for batch in reader.iter_batches(batch_size=batch_rows):
                hits = pc.is_in(batch.column(batch.schema.get_field_index("id")), value_set=wanted)
                if pc.any(hits).as_py():
                    found.append(pa.Table.from_batches([batch.filter(hits)]))
        # Arrow's allocator keeps freed pages; hand them back between parts.
        pool.release_unused()
    return in_selection_order(pa.concat_tables(found, promote_options="default").combine_chunks(), selected_ids)


def write_sharegpt_jsonl(rows: pa.Table, path: str) -> None:
    """ShareGPT JSONL, renamed into place only when every line is written."""
    keep = [c for c in ("evol_score", "complexity_scores", "quality_scores", "selection_rank") if c in rows.column_names]
    with fs.open_for_write(path) as f:
        for row in rows.select(["id", "conversations"] + keep).to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
