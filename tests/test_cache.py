"""The suite's one disk cache (bench.cache.Cache): keyed entries in two formats, misses on a corrupt file or another
key, atomic writes."""
import pytest
import torch

from bench.cache import Cache


@pytest.mark.parametrize("fmt,value", [("pt", {"t": torch.arange(3)}), ("json", {"rows": [1, 2.5, "x"]})])
def test_entries_round_trip_under_their_key(tmp_path, fmt, value):
    cache = Cache(tmp_path)
    key = {"a": 1, "b": [1, 2]}
    assert cache.load("stage", key, "label", fmt) is None
    calls = []
    out = cache.get_or_compute("stage", key, lambda: calls.append(1) or value, "label", fmt)
    again = cache.get_or_compute("stage", key, lambda: calls.append(1) or value, "label", fmt)
    assert calls == [1]  # computed once, then read back
    if fmt == "pt":
        assert torch.equal(again["t"], value["t"]) and torch.equal(out["t"], value["t"])
    else:
        assert again == value
    (path,) = (tmp_path / "stage").iterdir()
    assert path.name.startswith("label-") and path.suffix == f".{fmt}"
    assert not list(tmp_path.rglob("*.tmp"))
    assert cache.load("stage", {"a": 2, "b": [1, 2]}, "label", fmt) is None  # another key: a miss


@pytest.mark.parametrize("fmt", ["pt", "json"])
def test_a_corrupt_or_foreign_entry_is_a_miss(tmp_path, fmt):
    cache = Cache(tmp_path)
    cache.save("s", {"k": 1}, [1, 2], fmt=fmt)
    path = cache.path("s", {"k": 1}, fmt=fmt)
    path.write_bytes(b"\x00not a cache entry")
    assert cache.load("s", {"k": 1}, fmt=fmt) is None
    assert cache.get_or_compute("s", {"k": 1}, lambda: [3], fmt=fmt) == [3]
    assert cache.load("s", {"k": 1}, fmt=fmt) == [3]  # overwritten with a good entry


def test_a_disabled_cache_writes_nothing(tmp_path):
    cache = Cache(tmp_path / "c", enabled=False)
    assert cache.get_or_compute("s", {"k": 1}, lambda: 5) == 5
    assert not (tmp_path / "c").exists()
