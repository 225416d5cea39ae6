"""The suite's one results store: tidy rows (one metric value per row) in a single SQLite file.

Every measured result (a search's candidate evaluation, a baseline's row, a cost figure) is stored under a unique
*key* built from everything that produced it; a key is written once, in one transaction, together with all its
rows, so a reader sees a result whole or not at all and a killed writer leaves nothing half-written.  Tables and
plots are rendered from the store only; a result already stored under the same key is reused, not recomputed.

SQLite in WAL mode lets several processes (search workers, Ray actors) write at once: each opens its own
connection from the path, writes in ``BEGIN IMMEDIATE`` transactions and waits (busy timeout) for the others.
The schema carries a version; older stores are migrated in place, a newer one is refused.
"""
from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from pathlib import Path
from typing import Iterable

from flexiffusion.errors import UserError

from bench.results import Result

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0

COLUMNS = ("key", "experiment", "method", "model", "weights", "plan_digest", "plan", "scheduler", "grid",
           "metric", "value", "n_images", "seeds", "device", "threads", "versions", "git_commit", "created", "extra")
ENVIRONMENT_COLUMNS = ("device", "threads", "versions", "git_commit")

# Migration i takes a store from schema version i - 1 to i (version 0 = empty file).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE results (key TEXT PRIMARY KEY, created TEXT NOT NULL)",
        "CREATE TABLE rows (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "key TEXT NOT NULL REFERENCES results(key), experiment TEXT, method TEXT, model TEXT, weights TEXT, "
        "plan_digest TEXT, plan TEXT, scheduler TEXT, grid INTEGER, metric TEXT NOT NULL, value REAL, "
        "n_images INTEGER, seeds TEXT, device TEXT, threads INTEGER, versions TEXT, git_commit TEXT, "
        "created TEXT NOT NULL, extra TEXT)"),
    2: ("CREATE INDEX rows_by_key ON rows (key)",
        "CREATE INDEX rows_by_experiment ON rows (experiment, method, metric)"),
}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


class ResultStore:
    """Open (create or migrate) the store at ``path``; see the module docstring."""

    def __init__(self, path, *, migrate_to: int = SCHEMA_VERSION):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"results store {self.path} is a directory: give a file path, e.g. runs/results.sqlite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._env: dict | None = None
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(migrate_to)
        except sqlite3.DatabaseError as exc:
            self._fail(exc)

    # ---- schema -------------------------------------------------------------------------------------------------
    def _fail(self, exc: sqlite3.Error):
        msg = str(exc)
        if "locked" in msg or "busy" in msg:
            raise UserError(f"results store {self.path} is locked by another process (waited {BUSY_TIMEOUT_S:.0f} s):"
                            " wait for it to finish or use another --store") from None
        raise UserError(f"results store {self.path} is corrupted or not a results store ({msg}): move it away or "
                        "use another --store") from None

    def schema_version(self) -> int:
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError("tables of another program, no 'meta' table")
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, target: int) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise UserError(f"results store {self.path} has schema version {version}, newer than this suite's "
                                f"{SCHEMA_VERSION}: upgrade flexiffusion-bench or use another --store")
            for v in range(version + 1, target + 1):
                for statement in MIGRATIONS[v]:
                    self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)", (str(v),))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # ---- results ------------------------------------------------------------------------------------------------
    def _environment(self) -> dict:
        if self._env is None:
            from flexiffusion.environment import environment, library_versions

            env = environment()
            self._env = {"device": env["device"], "threads": env["threads"], "git_commit": env["git_commit"],
                         "versions": library_versions()}
        return self._env

    def _row(self, key: str, created: str, row: dict) -> tuple:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise UserError(f"result row has unknown field(s) {', '.join(sorted(unknown))}: the store's columns are "
                            f"{', '.join(COLUMNS)} (put anything else under 'extra')")
        if "metric" not in row:
            raise UserError("result row has no 'metric': every row holds one metric value")
        full = {**{c: self._environment()[c] for c in ENVIRONMENT_COLUMNS if c not in row}, **row,
                "key": key, "created": row.get("created", created)}
        return tuple(_text(full.get(c)) if c in ("plan", "versions", "extra") else full.get(c) for c in COLUMNS)

    def put(self, key: str, rows: Iterable[dict]) -> bool:
        """Store all ``rows`` of one result under ``key`` in one transaction; False (no-op) if ``key`` exists."""
        created = _now()
        values = [self._row(key, created, dict(r)) for r in rows]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone():
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("INSERT INTO results (key, created) VALUES (?, ?)", (key, created))
                self._db.executemany(f"INSERT INTO rows ({', '.join(COLUMNS)}) VALUES "
                                     f"({', '.join('?' * len(COLUMNS))})", values)
                self._db.execute("COMMIT")
                return True
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            self._fail(exc)

    def _select(self, where: str = "", params: tuple = ()) -> list[dict]:
        try:
            cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM rows {where} ORDER BY id", params)
            out = []
            for values in cur.fetchall():
                row = dict(zip(COLUMNS, values))
                for c in ("versions", "extra"):
                    if row[c] is not None:
                        row[c] = json.loads(row[c])
                out.append(row)
            return out
        except sqlite3.DatabaseError as exc:
            self._fail(exc)

    def get_or_put(self, key: str, compute) -> tuple[Result, bool]:
        """``(result, reused)``: the result stored under ``key``, or ``compute()``'s rows stored under it first.

        The one "get or compute, then store" of every writer; ``compute`` runs only when ``key`` is absent (a
        concurrent writer that stored the same key first wins: its rows are returned)."""
        rows = self.get(key)
        if rows is not None:
            return Result(key, tuple(rows)), True
        rows = list(compute())
        if not rows:
            raise ValueError(f"result {key}: the writer produced no rows")
        self.put(key, rows)
        return Result(key, tuple(self.get(key))), False

    def result(self, key: str) -> Result | None:
        """The typed :class:`bench.results.Result` under ``key`` (None if absent)."""
        rows = self.get(key)
        return None if rows is None else Result(key, tuple(rows))

    def get(self, key: str) -> list[dict] | None:
        """The rows stored under ``key`` (``None`` if there is no such result)."""
        if not self.has(key):
            return None
        return self._select("WHERE key=?", (key,))

    def has(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone() is not None

    def keys(self, prefix: str = "") -> list[str]:
        cur = self._db.execute("SELECT key FROM results WHERE substr(key, 1, ?) = ? ORDER BY key",
                               (len(prefix), prefix))
        return [k for (k,) in cur.fetchall()]

    def frame(self, **filters):
        """All rows matching ``column=value`` filters as a tidy pandas DataFrame."""
        import pandas as pd

        unknown = set(filters) - set(COLUMNS)
        if unknown:
            raise UserError(f"unknown store column(s) {', '.join(sorted(unknown))}: use one of {', '.join(COLUMNS)}")
        where = " AND ".join(f"{c} = ?" for c in filters)
        rows = self._select(f"WHERE {where}" if where else "", tuple(filters.values()))
        return pd.DataFrame(rows, columns=list(COLUMNS))

    # ---- metadata -----------------------------------------------------------------------------------------------
    def set_meta(self, name: str, value: str) -> None:
        if name == "schema_version":
            raise UserError("'schema_version' is reserved: choose another meta name")
        try:
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, str(value)))
        except sqlite3.DatabaseError as exc:
            self._fail(exc)

    def get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("a ResultStore holds a database connection: send its path and open it in the worker")


def peek_meta(path, name: str | None) -> str | None:
    """Check that ``path`` is a results store (or absent, or empty) and return its ``name`` metadata (None if absent),
    writing nothing: the file is opened ``immutable`` (no lock, no -wal/-shm files created), so a check before a
    run leaves no trace.  Such a reader does not see what a killed writer left in the write-ahead log."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        raise UserError(f"results store {path} is a directory: give a file path, e.g. runs/results.sqlite")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return None
            if not {"meta", "results", "rows"} <= tables:
                raise sqlite3.DatabaseError("tables of another program")
            db.execute("SELECT count(*) FROM rows").fetchone()
            row = db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone() if name else None
            return row[0] if row else None
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"results store {path} is corrupted or not a results store ({exc}): move it away or use "
                        "another --store") from None
