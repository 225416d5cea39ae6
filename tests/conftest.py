import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def tiny_unet():
    from bench.models.tiny import tiny_unet2d

    return tiny_unet2d()


@pytest.fixture
def tiny_class_unet():
    from bench.models.tiny import tiny_unet2d

    return tiny_unet2d(num_class_embeds=11)


@pytest.fixture(scope="session")
def tiny_sd():
    from bench.models.tiny import tiny_sd_pipeline

    return tiny_sd_pipeline()


# tiny real searches (flexbench search): the store rows a reader of searches is tested against
SEARCH_FLAGS = ["--images", "8", "--iterations", "1", "--initial", "2", "--children", "2", "--parents", "2",
                "--threads", "1", "--batch-size", "8"]
SEARCHES = (("embedded-50", "embedded-50-tile-s0"), ("embedded-41", "other"))


@pytest.fixture(scope="session")
def searched_store(tmp_path_factory):
    """``(store path, {search name: best plan tokens})`` of a store that the real ``flexbench search`` filled:
    ``embedded-50-tile-s0`` (preset embedded-50, default name) and ``other`` (preset embedded-41).  Tests copy it
    (:func:`copy_store`) instead of writing search rows by hand."""
    import json

    from bench.cli import main

    tmp = tmp_path_factory.mktemp("searched")
    store, best = tmp / "store.sqlite", {}
    for preset, name in SEARCHES:
        out = tmp / name
        assert main(["search", "--preset", preset, *SEARCH_FLAGS, "--name", name, "--store", str(store),
                     "--cache-dir", str(tmp / "cache"), "--out", str(out)]) == 0
        best[name] = json.loads((out / "best.json").read_text())["steps"]
    return store, best


def copy_store(source, target):
    """A copy of a results store file (WAL checkpointed into it first), so a test may change its copy."""
    import sqlite3

    db = sqlite3.connect(source)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        dest = sqlite3.connect(target)
        try:
            db.backup(dest)
        finally:
            dest.close()
    finally:
        db.close()
    return target
