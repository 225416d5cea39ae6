"""The results store: round trip, idempotent put, concurrent writers, migrations, refusals, kill -9 mid-write."""
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from bench.store import COLUMNS, SCHEMA_VERSION, ResultStore
from flexiffusion.errors import UserError


def _rows(i: int) -> list[dict]:
    return [{"experiment": "t", "method": "m", "plan": {"steps": ["f", "n"]}, "metric": "rfid", "value": float(i),
             "n_images": 10, "extra": {"spread": 0.5}},
            {"experiment": "t", "method": "m", "metric": "avg_macs", "value": 2.0 * i}]


def test_round_trip_and_environment_defaults(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.put("k1", _rows(1)) is True
        rows = store.get("k1")
    assert [r["metric"] for r in rows] == ["rfid", "avg_macs"]
    assert rows[0]["value"] == 1.0 and rows[1]["value"] == 2.0
    assert rows[0]["extra"] == {"spread": 0.5} and rows[0]["plan"] == '{"steps": ["f", "n"]}'
    assert rows[0]["versions"]["torch"] and rows[0]["device"] == "cpu" and rows[0]["threads"] >= 1
    assert rows[0]["key"] == "k1" and rows[0]["created"]


def test_put_is_idempotent_and_reopen_keeps_everything(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        assert store.put("k", _rows(1))
        assert store.put("k", _rows(7)) is False          # same key: no-op, first result kept
        store.set_meta("search/x", "digest")
    with ResultStore(path) as store:
        assert [r["value"] for r in store.get("k")] == [1.0, 2.0]
        assert store.get("missing") is None and not store.has("missing") and store.has("k")
        assert store.get_meta("search/x") == "digest" and store.get_meta("nope") is None
        assert store.keys() == ["k"] and store.keys("x") == []
        df = store.frame(metric="rfid")
    assert list(df.columns) == list(COLUMNS) and len(df) == 1


def test_bad_rows_are_refused_whole(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(UserError, match="unknown field.*colour"):
            store.put("k", [{"metric": "fid", "value": 1.0}, {"metric": "fid", "colour": "red"}])
        with pytest.raises(UserError, match="no 'metric'"):
            store.put("k", [{"value": 1.0}])
        assert not store.has("k") and store.frame().empty
        with pytest.raises(UserError, match="unknown store column"):
            store.frame(methd="x")


def _writer(path, worker, n):
    with ResultStore(path) as store:
        for i in range(n):
            store.put(f"w{worker}-{i}", _rows(i))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with ResultStore(path) as store:
        assert len(store.keys()) == 160
        assert len(store.frame()) == 320


def test_migration_from_version_1(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path, migrate_to=1) as old:
        assert old.schema_version() == 1
        old.put("k", _rows(3))
    with ResultStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 2
        indexes = {n for (n,) in store._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"rows_by_key", "rows_by_experiment"} <= indexes
        assert [r["value"] for r in store.get("k")] == [3.0, 6.0]


def test_newer_schema_corrupted_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    ResultStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="schema version 99, newer"):
        ResultStore(path)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="corrupted"):
        ResultStore(bad)
    assert bad.read_bytes() == b"this is not a database" * 100   # nothing written to it
    foreign = tmp_path / "foreign.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE other (x)")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="not a results store"):
        ResultStore(foreign)


def test_locked_store_is_one_clear_error(tmp_path, monkeypatch):
    import bench.store as store_mod

    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(UserError, match="locked by another process"):
            ResultStore(path).put("k", _rows(1))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_kill_9_during_writes_leaves_whole_results(tmp_path):
    path = tmp_path / "r.sqlite"
    code = textwrap.dedent(f"""
        import sys
        from bench.store import ResultStore
        store = ResultStore({str(path)!r})
        i = 0
        while True:
            store.put(f"k{{i}}", [{{"metric": "m", "value": float(j)}} for j in range(50)])
            if i == 0:
                print("ready", flush=True)   # the environment record is loaded: writes are fast from here on
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.stdout.readline().strip() == "ready"
    import time
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with ResultStore(path) as store:
        keys = store.keys()
        assert keys, "the writer stored nothing before it was killed"
        counts = store.frame().groupby("key").size()
        assert set(counts.index) == set(keys) and (counts == 50).all()


def test_store_is_not_pickled_into_workers(tmp_path):
    import pickle

    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(TypeError, match="send its path"):
            pickle.dumps(store)
