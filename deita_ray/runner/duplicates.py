"""Duplicate ids, caught at the end of the first stage: the first copy kept, the others quarantined."""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from deita_ray.io.quarantine import PERMANENT, part_for, quarantine_rows, raw_record
from deita_ray.io.writer import list_parts, write_part
from deita_ray.runner.layout import StageLayout
from deita_ray.runner.resume import row_keys


def dedupe_ids(layout: StageLayout) -> int:
    """Quarantine every copy of an id after its first (smallest source, position); returns how many.
    Run at the end of the first stage, so no later stage works on a duplicate. Idempotent: a crash
    part-way is repaired by running it again."""
    import pyarrow.parquet as pq

    parts = list_parts(layout.parts)
    if not parts:
        return 0
    from deita_ray.io.writer import arrow_filesystem

    afs = arrow_filesystem(layout.parts)
    keys = []
    for index, part in enumerate(parts):
        t = pq.read_table(part, columns=["id", "source", "position"], filesystem=afs)
        keys.append(t.append_column("part", pa.array([index] * t.num_rows, pa.int32())))
    keys = pa.concat_tables(keys)
    if pc.count_distinct(keys.column("id")).as_py() == keys.num_rows:
        return 0
    counts = pc.value_counts(keys.column("id"))
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    dup = keys.filter(pc.is_in(keys.column("id"), value_set=repeated)).to_pylist()
    dup.sort(key=lambda r: (r["id"], r["source"] or "", r["position"] if r["position"] is not None else -1))
    first: dict[str, dict] = {}
    losers_by_part: dict[int, list[dict]] = {}
    for row in dup:
        if row["id"] not in first:
            first[row["id"]] = row
        else:
            losers_by_part.setdefault(row["part"], []).append(row)
    total = 0
    for index, losers in sorted(losers_by_part.items()):
        table = pq.read_table(parts[index], filesystem=afs)
        lost = {(r["id"], r["source"], r["position"]) for r in losers}
        mask = pa.array([k in lost for k in row_keys(table)])
        bad = table.filter(mask).to_pylist()
        reasons = ["duplicate id: an earlier row has the same id (first kept; ids compare as strings, so 3 and \"3\" "
                   "collide)"] * len(bad)
        ids = [r["id"] for r in bad]
        write_part(quarantine_rows(ids, layout.stage, reasons, [raw_record(r) for r in bad],
                                   [r.get("source") for r in bad], [r.get("position") for r in bad]),
                   layout.quarantine, part_for(f"{layout.stage}-duplicates", PERMANENT, ids))
        write_part(table.filter(pc.invert(mask)), layout.parts, posixpath.basename(parts[index]))  # replaced whole
        total += len(bad)
    return total
