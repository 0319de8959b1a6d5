"""A sweep's results file: one SQLite table, one complete row per INSERT, resumable.

Why SQLite (the standard library's :mod:`sqlite3`) and not DuckDB: a sweep writes one small
row at a time, as each plan finishes, and must never leave half a row behind. That is
transactional row-at-a-time writing — what SQLite is built for (a commit is durable once
``COMMIT`` returns; in WAL mode a reader, ``refquant results``, can read while the sweep
writes). DuckDB is a columnar engine for analytic scans of large tables; a sweep's table has
thousands of rows, not billions, and DuckDB would be a dependency where the core keeps to
numpy, scipy, numba and pluggy. Any SQLite client (and DuckDB itself) reads the file.

Schema (:data:`SCHEMA`): a ``meta`` table (``format = refquant-results``, ``schema = 1``) and a
``rows`` table whose key is ``(model, plan, dataset, data_sha256, refquant_version,
model_sha256)``; every column but ``accuracy`` and ``float_accuracy`` (``NULL`` only for a model
without labels) is ``NOT NULL``, so an incomplete record cannot be inserted at all. Each row is
its own transaction (``BEGIN IMMEDIATE; INSERT; COMMIT``): after a Ctrl-C or a killed process
the file holds exactly the rows whose ``COMMIT`` returned.

Resume: :meth:`ResultsFile.done` is the set of keys present; a row of the sweep counts as done
only if its whole key is there. Rows of the same model, plan and data set written by another
refquant version or from other weights (another model SHA-256) are refused with one line naming
both (:meth:`ResultsFile.check_compatible`): a sweep never mixes them.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

__all__ = ["ResultsError", "ResultsFile", "KEY", "COLUMNS", "SCHEMA", "read_rows", "rows_as_csv"]

MAGIC = b"SQLite format 3\x00"
FORMAT, SCHEMA_VERSION = "refquant-results", "2"

#: the columns that identify a row
KEY = ("model", "plan", "dataset", "data_sha256", "refquant_version", "model_sha256")

#: every column in table order: name, SQL type, NULL allowed
COLUMNS = (
    ("model", "TEXT", False), ("plan", "TEXT", False), ("dataset", "TEXT", False),
    ("data_sha256", "TEXT", False), ("refquant_version", "TEXT", False), ("model_sha256", "TEXT", False),
    ("seq", "INTEGER", False),  # the row's position in the serial sweep (output order)
    ("weights", "TEXT", False), ("activations", "TEXT", False), ("bits", "INTEGER", False),
    ("activation_bits", "INTEGER", False), ("granularity", "TEXT", False), ("images", "INTEGER", False),
    ("accuracy", "REAL", True), ("float_accuracy", "REAL", True), ("top1_agreement", "REAL", False),
    ("top5_agreement", "REAL", False), ("sqnr_db", "REAL", False), ("peak_working_bytes", "INTEGER", False),
    ("latency_ms", "REAL", False),
    # the OCR models' fidelity (refquant.compare_ocr); NULL for the other models
    ("box_f1", "REAL", True), ("cer_float", "REAL", True), ("cer_transcription", "REAL", True),
    ("float_cer_transcription", "REAL", True),
    ("requant", "TEXT", False), ("backend", "TEXT", False),
    ("executor", "TEXT", False), ("finished_at", "TEXT", False),
)
_NAMES = tuple(c[0] for c in COLUMNS)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS rows (\n  "
    + ",\n  ".join(f"{n} {t}{'' if null else ' NOT NULL'}" for n, t, null in COLUMNS)
    + f",\n  PRIMARY KEY ({', '.join(KEY)})\n);"
)


class ResultsError(ValueError):
    """A results file that cannot be used: not SQLite, not refquant's, or of another version."""


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if path.exists():
        if path.is_dir():
            raise ResultsError(f"{path}: is a directory, not a results file")
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
        if head and head != MAGIC:
            raise ResultsError(f"{path}: not a SQLite results file (its first bytes are not 'SQLite format 3')")
    elif not create:
        raise ResultsError(f"{path}: no such results file")
    con = sqlite3.connect(str(path), timeout=30, isolation_level=None)  # explicit transactions only
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise sqlite3.DatabaseError(f"tables {', '.join(sorted(tables))}")
        if create:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.executescript(SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?), ('schema', ?)", (FORMAT, SCHEMA_VERSION))
        meta = dict(con.execute("SELECT key, value FROM meta"))
        columns = [r[1] for r in con.execute("PRAGMA table_info(rows)")]
    except sqlite3.DatabaseError as exc:
        con.close()
        raise ResultsError(f"{path}: a SQLite file but not a refquant results file ({exc}; expected tables meta "
                           f"and rows of format {FORMAT!r})") from None
    if meta.get("format") != FORMAT or tuple(columns) != _NAMES:
        con.close()
        raise ResultsError(f"{path}: a SQLite file but not a refquant results file (expected tables meta and rows "
                           f"of format {FORMAT!r})")
    if meta.get("schema") != SCHEMA_VERSION:
        con.close()
        raise ResultsError(f"{path}: results schema {meta.get('schema')!r}; this refquant reads schema "
                           f"{SCHEMA_VERSION!r}")
    return con


class ResultsFile:
    """The open results file of one sweep (the one writer: the process that runs the sweep)."""

    def __init__(self, path):
        self.path = Path(path)
        self._con = _connect(self.path, create=True)

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_compatible(self, keys, *, resume: bool) -> None:
        """Refuse rows of this sweep written by another version or model hash, and — without
        ``resume`` — any row of this sweep already present.

        ``keys``: the sweep's rows as dicts with every :data:`KEY` column.
        """
        con = self._con
        for k in keys:
            found = con.execute("SELECT refquant_version, model_sha256 FROM rows WHERE model=? AND plan=? AND "
                                "dataset=? AND data_sha256=?", (k["model"], k["plan"], k["dataset"],
                                                                k["data_sha256"])).fetchall()
            for version, sha in found:
                if (version, sha) != (k["refquant_version"], k["model_sha256"]):
                    raise ResultsError(
                        f"{self.path}: holds rows of model {k['model']!r} computed by refquant {version} from model "
                        f"sha256 {sha[:12]}…; this sweep is refquant {k['refquant_version']} with model sha256 "
                        f"{k['model_sha256'][:12]}… — results of different versions or weights are not mixed: "
                        f"use another --results file")
                if not resume:
                    raise ResultsError(f"{self.path}: already holds rows of this sweep (model {k['model']!r}, "
                                       f"plan {k['plan']!r}, data set {k['dataset']!r}); pass --resume to skip "
                                       f"them, or use another --results file")

    def done(self) -> set:
        """The keys (tuples in :data:`KEY` order) of the rows already in the file."""
        return {tuple(r) for r in self._con.execute(f"SELECT {', '.join(KEY)} FROM rows")}

    def row(self, key: dict) -> dict:
        """The stored row with this key (every column by name)."""
        cur = self._con.execute(f"SELECT {', '.join(_NAMES)} FROM rows WHERE "
                                f"{' AND '.join(f'{k}=?' for k in KEY)}", [key[k] for k in KEY])
        found = cur.fetchone()
        if found is None:
            raise KeyError(f"{self.path}: no row {key}")
        return dict(zip(_NAMES, found))

    def insert(self, row: dict) -> None:
        """Insert one complete row in its own transaction (a missing column is a ``ValueError``
        before anything is written; SQLite's ``NOT NULL`` refuses a ``None`` where none may be)."""
        missing = [n for n in _NAMES if n not in row]
        if missing:
            raise ValueError(f"results row lacks {', '.join(missing)}")
        values = [row[n] for n in _NAMES]
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(f"INSERT INTO rows ({', '.join(_NAMES)}) VALUES ({', '.join('?' * len(_NAMES))})", values)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def read_rows(path) -> list[dict]:
    """Every row of a results file, in sweep order (model, ``seq``, then insertion)."""
    con = _connect(Path(path), create=False)
    try:
        cur = con.execute(f"SELECT {', '.join(_NAMES)} FROM rows ORDER BY refquant_version, model, seq, rowid")
        return [dict(zip(_NAMES, r)) for r in cur]
    finally:
        con.close()


def rows_as_csv(rows: list[dict]) -> str:
    """``rows`` as CSV with a header line (every column; empty for ``NULL``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(_NAMES), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return out.getvalue()

