"""A run's results without its checkpoints: what ``dwrec report`` reads, small enough to keep
in git, with no machine's folders in it (:func:`export_results`), and the per-case tables of
such a copy rebuilt byte for byte (:func:`expand_results`).

Used by ``benchmarks/reproduce_paper.py --archive``: a long reproduction keeps every finished
run here, so losing its working folder costs no finished run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from dwrec.errors import DataFormatError, DwrecError, UsageError
from dwrec.io import (
    atomic_dir,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
    write_parquet_to,
)
from dwrec.rundir import CONFIG, ENVIRONMENT, EVALUATION_SPLITS, TRAIN_DONE, RunDir, output_names


def export_results(
    run: str | os.PathLike,
    dest: str | os.PathLike,
    root: str | os.PathLike,
    shared: str | os.PathLike | None = None,
) -> Path:
    """Copy run dir ``run``'s results, without its checkpoints, to ``dest`` (replaced whole,
    atomically) and return it: config, environment, epoch log, training summary and every
    evaluation (per-case table and metrics). What ``dwrec report`` reads, a few hundred KB
    where the checkpoints take MBs, so the results of a long run can be kept in git.

    Paths in the JSON files that lie under ``root`` (the run's dataset, the run an
    evaluation with ``--out`` evaluated) are written relative to ``root``: the copy names no
    machine's folders, and a report run from the copy's root finds what they point to.
    Any other absolute path is a :class:`DwrecError` naming the file, before anything is
    written. ``run`` must be evaluated on the test split; an evaluation with ``--out`` (a
    folder of evaluation outputs only, no config) is exported as it is.

    ``shared``: a Parquet file of the per-case columns that do not depend on the model (user,
    target item, its domains, cohorts), which every run evaluated on the same test cases has
    alike. The copy's per-case table then keeps only the run's own columns (case id, rank,
    metric values; a tenth of the size on S3-Rec Beauty) and ``shared`` is written once, checked equal
    after that; :func:`expand_results` rebuilds the table byte for byte. A table that would
    not come back identical is copied whole."""
    source, root = RunDir(run), Path(root).absolute()
    if not source.is_evaluated():
        raise UsageError(f"{source.path}: not evaluated on the test split; nothing to export")
    metrics_names = [output_names(split)[1] for split in EVALUATION_SPLITS]
    documents: dict[str, Any] = {}  # metrics last: a copy with them is a complete copy
    for name in (CONFIG, ENVIRONMENT, TRAIN_DONE, *metrics_names):
        path = source / name
        if path.exists():
            documents[name] = _relative_paths(read_json(path), root, path)
    log = []
    for number, record in enumerate(source.read_log(), start=1):
        log.append(_relative_paths(record, root, source.log_path, number))
    with atomic_dir(dest) as tmp:
        target = RunDir(tmp)
        for split in EVALUATION_SPLITS:
            table, metrics = output_names(split)
            if not (source / table).exists() or metrics not in documents:
                continue
            compact = None if shared is None else _compact_cases(source / table, Path(shared))
            if compact is None:
                shutil.copyfile(source / table, tmp / table)
            else:
                write_parquet(tmp / table, compact)
        if source.log_path.exists():
            target.write_log(log)
        for name, document in documents.items():
            write_json(tmp / name, document)
    return Path(dest)


CASE_KEY = "case_id"
_COLUMNS_KEY = b"dwrec.export.columns"  # a compact per-case table's full column order


def _own_columns(names: list[str]) -> list[str]:
    """The per-case columns a run computes itself: the case id, the rank, metric values."""
    return [n for n in names if n in (CASE_KEY, "rank") or "@" in n]


def _compact_cases(path: Path, shared: Path) -> Any:
    """``path``'s per-case table less the columns ``shared`` holds (written there when it
    does not exist yet), or ``None`` when its shared columns differ from ``shared``'s or the
    compact table would not rebuild to ``path``'s exact bytes."""
    table = read_parquet(path)
    names = table.column_names
    if CASE_KEY not in names:
        return None
    own = _own_columns(names)
    common = table.select([CASE_KEY] + [n for n in names if n not in own]).sort_by(CASE_KEY)
    if shared.exists():
        stored = read_parquet(shared)
        if not stored.equals(common):
            return None
        common = stored
    if table[CASE_KEY].equals(common[CASE_KEY]):  # in case order: the ids go with common
        own.remove(CASE_KEY)
    metadata = {**(table.schema.metadata or {}), _COLUMNS_KEY: json.dumps(names).encode()}
    compact = table.select(own).replace_schema_metadata(metadata)
    if _parquet_bytes(_rebuild(compact, common)) != path.read_bytes():
        return None
    if not shared.exists():
        write_parquet(shared, common)
    return compact


def _rebuild(compact: Any, common: Any) -> Any:
    """The per-case table that ``compact`` and the shared columns ``common`` were split from."""
    import pyarrow as pa

    metadata = dict(compact.schema.metadata)
    names = json.loads(metadata.pop(_COLUMNS_KEY))
    if CASE_KEY in compact.column_names:
        position = {case: i for i, case in enumerate(common[CASE_KEY].to_pylist())}
        try:
            rows = [position[case] for case in compact[CASE_KEY].to_pylist()]
        except KeyError as missing:
            raise DwrecError(f"case {missing} is not among the shared per-case columns") from None
        others = common.take(pa.array(rows, type=pa.int64()))
    elif compact.num_rows == common.num_rows:  # stored in case order, ids left to common
        others = common
    else:
        raise DwrecError(f"{compact.num_rows} cases, the shared columns hold {common.num_rows}")
    parts = [compact if name in compact.column_names else others for name in names]
    fields, columns = [], []
    for part, name in zip(parts, names, strict=True):
        field, column = part.schema.field(name), part[name]
        if pa.types.is_list(field.type):  # Parquet reads a list's values back as "element"
            field = field.with_type(pa.list_(field.type.value_type))  # pyarrow writes "item"
            column = column.cast(field.type)
        fields.append(field)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=metadata or None))


def _parquet_bytes(table: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    write_parquet_to(buffer, table)
    return buffer.getvalue()


def expand_results(folder: str | os.PathLike, shared: str | os.PathLike) -> None:
    """Rebuild, in place, the per-case tables of an :func:`export_results` copy made with
    ``shared``; tables copied whole are left as they are."""
    for split in EVALUATION_SPLITS:
        path = Path(folder) / output_names(split)[0]
        if not path.exists():
            continue
        compact = read_parquet(path)
        if _COLUMNS_KEY in (compact.schema.metadata or {}):
            write_parquet(path, _rebuild(compact, read_parquet(shared)))


def _relative_paths(value: Any, root: Path, source: Path, line: int | None = None) -> Any:
    """``value`` (parsed JSON) with every absolute path under ``root`` made relative to it; a
    :class:`DataFormatError` naming ``source`` for an absolute path elsewhere."""
    if isinstance(value, dict):
        return {k: _relative_paths(v, root, source, line) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v, root, source, line) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return Path(value).relative_to(root).as_posix()
        except ValueError:
            raise DataFormatError(
                source, f"absolute path {value!r} lies outside {root}; export refused", line
            ) from None
    return value
