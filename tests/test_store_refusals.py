"""Store refusals end to end (issue 12 item 1): a store locked by *another process*, from a newer schema, or
corrupted gives one clear line, exit 2 from the CLI, and loses nothing already stored."""
import sqlite3
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.store import ResultStore
from flexiffusion.errors import UserError


def _stored(path, n=3):
    with ResultStore(path) as s:
        for i in range(n):
            s.put(f"k{i}", [{"experiment": "t", "metric": "m", "value": float(i)}])


def test_store_locked_by_another_process_loses_nothing(tmp_path, monkeypatch):
    import bench.store as store_mod

    path = tmp_path / "r.sqlite"
    _stored(path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)  # short busy timeout for the test
        t0 = time.perf_counter()
        with pytest.raises(UserError, match="locked by another process"):
            ResultStore(path).put("new", [{"metric": "m", "value": 1.0}])
        assert time.perf_counter() - t0 < 20
    finally:
        holder.kill()
        holder.wait()
    with ResultStore(path) as s:
        assert s.keys() == ["k0", "k1", "k2"] and len(s.frame()) == 3


def test_cli_refuses_newer_and_corrupted_stores_with_exit_2(tmp_path, capsys):
    newer = tmp_path / "newer.sqlite"
    _stored(newer)
    db = sqlite3.connect(newer)
    db.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    db.commit()
    db.close()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 200)
    for path, word in ((newer, "newer"), (bad, "corrupted")):
        before = path.read_bytes()
        assert main(["ablation", "--candidates", "3", "--k", "4", "--store", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and err[0].startswith("error:")
        assert path.read_bytes() == before  # nothing lost, nothing written
    db = sqlite3.connect(newer)
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == 3
    db.close()
