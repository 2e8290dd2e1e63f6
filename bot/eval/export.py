"""``eval export``: a run's task results as JSON, CSV or Parquet.

Every format holds one record per task result (one task under one variant):
``TaskOutcome.as_dict()`` with the run's id first, so files of several runs can
be concatenated and still be told apart.

- JSON: a list of those records, nested fields (``tools``, ``checks``,
  ``transcript``) as JSON lists.
- CSV: the same columns, flat. Nested fields are JSON strings in their cell,
  booleans are ``true``/``false`` and a missing value (``cost`` of an unpriced
  model, ``first_token_ms`` without streaming) is an empty cell.
- Parquet: typed columns (int64, float64, bool, string, all nullable where the
  value can be missing) and the nested fields as real list columns:
  ``tools`` is ``list<string>``, ``checks`` is
  ``list<struct<check, passed, detail>>`` and ``transcript`` is
  ``list<struct<user, assistant>>``. Reading the file back with pyarrow's
  ``to_pylist()`` gives exactly the JSON records.

Paths are not created or checked here: an unwritable ``out`` raises OSError,
which the CLI reports.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal, get_args

from bot.errors import ConfigError
from bot.storage.evals import RunRecord

ExportFormat = Literal["csv", "json", "parquet"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)

# The columns of every format, in order: the run's id, then
# TaskOutcome.as_dict()'s keys.
EXPORT_COLUMNS: tuple[str, ...] = (
    "run_id", "task_id", "category", "variant", "passed", "error", "first_token_ms", "total_ms",
    "tokens_in", "tokens_out", "cost", "tool_calls", "tools", "model", "fallbacks", "agent", "checks",
    "transcript",
)
# Fields whose values are lists (of strings or of small mappings).
_NESTED_FIELDS = ("tools", "checks", "transcript")


def export_run(record: RunRecord, fmt: ExportFormat, out: Path) -> int:
    """Write every task result of ``record`` to ``out`` in ``fmt``; the number
    of rows written. ConfigError for an unknown format (before ``out`` is
    touched); OSError when ``out`` cannot be written."""
    writer = _WRITERS.get(fmt)
    if writer is None:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    rows = export_rows(record)
    writer(rows, out)
    return len(rows)


def export_rows(record: RunRecord) -> list[dict[str, Any]]:
    """The run's results as the JSON export holds them, in stored order."""
    return [{"run_id": record.id, **outcome.as_dict()} for outcome in record.results]


def _write_json(rows: list[dict[str, Any]], out: Path) -> None:
    # ensure_ascii=False keeps Russian transcripts readable in the file.
    out.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    with out.open("w", encoding="utf-8", newline="") as handle:
        # A field added to TaskOutcome.as_dict() but not here fails loudly
        # (DictWriter refuses unknown keys) instead of vanishing from the file.
        writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows({name: _csv_cell(name, value) for name, value in row.items()} for row in rows)


def _csv_cell(name: str, value: Any) -> str | int | float:
    if name in _NESTED_FIELDS:
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    if isinstance(value, bool):
        # Lower case like JSON, so one spelling of booleans across formats.
        return "true" if value else "false"
    return value


def _write_parquet(rows: list[dict[str, Any]], out: Path) -> None:
    # pyarrow is large; only an export pays for importing it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    # An explicit schema: inferring it from the rows fails for an empty run
    # and guesses "null" for a column that is None in every row.
    table = pa.Table.from_pylist(rows, schema=_parquet_schema())
    pq.write_table(table, str(out))


def _parquet_schema() -> Any:
    import pyarrow as pa

    check = pa.struct([("check", pa.string()), ("passed", pa.bool_()), ("detail", pa.string())])
    turn = pa.struct([("user", pa.string()), ("assistant", pa.string())])
    return pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("task_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("variant", pa.string(), nullable=False),
            pa.field("passed", pa.bool_(), nullable=False),
            pa.field("error", pa.string()),
            pa.field("first_token_ms", pa.int64()),
            pa.field("total_ms", pa.int64(), nullable=False),
            pa.field("tokens_in", pa.int64(), nullable=False),
            pa.field("tokens_out", pa.int64(), nullable=False),
            pa.field("cost", pa.float64()),
            pa.field("tool_calls", pa.int64(), nullable=False),
            pa.field("tools", pa.list_(pa.string()), nullable=False),
            pa.field("model", pa.string()),
            pa.field("fallbacks", pa.int64(), nullable=False),
            pa.field("agent", pa.string()),  # the agent of the last turn; null in single-agent mode
            pa.field("checks", pa.list_(check), nullable=False),
            pa.field("transcript", pa.list_(turn), nullable=False),
        ]
    )


_WRITERS = {"json": _write_json, "csv": _write_csv, "parquet": _write_parquet}
