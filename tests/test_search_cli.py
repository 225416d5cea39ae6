"""``flexbench search`` / ``flexbench space`` / ``flexbench search-compare``: help, sizes, bad input (one line, exit 2,
nothing written), and a tiny real search on the embedded model (rFID on 8 images) resumed from the store."""
import json
import os

import pytest

from bench.cli import main
from bench.search.presets import PRESETS


def _listing(path):
    return sorted(os.listdir(path))


def test_help_lists_presets_and_layouts(capsys):
    for cmd in ("search", "space"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert all(name in out for name in PRESETS) and "tile" in out and "compact" in out
    assert len([p for p in PRESETS if p.split("-")[0] in ("cifar10", "bedroom", "church", "imagenet", "parti",
                                                         "coco")]) == 19 + 1   # Table 8's 19 rows + E.2


def test_space_prints_exact_sizes(capsys):
    assert main(["space", "--preset", "embedded-33"]) == 0
    out = capsys.readouterr().out
    assert "candidates: 3857595403044674519800793421291 " in out          # 9**30 + 9**31 + 9**32
    assert str(9 ** 30 + 9 ** 31 + 9 ** 32) in out and "NFE 30..96" in out
    assert "budget" in out and "34466308259467153947546219 candidates" in out


@pytest.mark.parametrize("argv,match", [
    (["--branches", "1,12"], "branch choice 12 out of range"),
    (["--branches", ","], "empty branch choice list"),
    (["--intervals", "0,1"], "interval choice 0 out of range"),
    (["--budget", "0.01"], "below the cheapest candidate of the space (0.0285039 G: 30 segments of 1.1)"),
    (["--preset", "cifar10-3.0g", "--model", "embedded"], "made for the ddpm-cifar10 model"),
    (["--preset", "nope"], "unknown search preset 'nope'"),
    (["--layout", "tile", "--segments", "34"], "interval 3 does not fit: 34 segments"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, argv, match):
    args = ["search", "--preset", "embedded-50", "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "o")]
    if "--preset" in argv:
        args = args[:1] + args[3:]
    assert main(args + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err
    assert _listing(tmp_path) == []


def test_corrupted_store_refused_untouched(tmp_path, capsys):
    bad = tmp_path / "s.sqlite"
    bad.write_bytes(b"garbage" * 500)
    assert main(["search", "--preset", "embedded-50", "--store", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupted or not a results store" in err and "\n" not in err
    assert _listing(tmp_path) == ["s.sqlite"] and bad.read_bytes() == b"garbage" * 500


def test_tiny_real_search_resumes_from_store_and_refuses_other_setting(tmp_path, capsys):
    store, out = tmp_path / "s.sqlite", tmp_path / "o"
    base = ["search", "--preset", "embedded-41", "--images", "8", "--iterations", "1", "--initial", "2",
            "--children", "2", "--parents", "2", "--threads", "1", "--batch-size", "8", "--store", str(store),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(base + ["--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "best: rfid" in first and " 0 read from the store" in first
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["avg_macs"] <= 0.41 * summary["setting"]["step_macs"][-1]
    # the same command again: everything from the store, identical result
    assert main(base + ["--out", str(tmp_path / "o2")]) == 0
    again = capsys.readouterr().out
    assert "evaluations: 0 new" in again
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["best"] == summary["best"]
    # the best plan runs with flexbench sample, on the sampler it names
    assert summary["best"]["scheduler"] == "ddim"
    assert main(["sample", "--plan", str(out / "best.json"), "--steps", "100", "--seeds", "0-1",
                 "--out", str(tmp_path / "img")]) == 0
    assert len(os.listdir(tmp_path / "img")) == 2
    capsys.readouterr()
    # same name, other seed: refused, nothing written
    listing, size = _listing(tmp_path), store.stat().st_size
    assert main(base + ["--out", str(tmp_path / "o3"), "--seed", "1", "--name", "embedded-41-tile-s0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds search 'embedded-41-tile-s0' with another setting (differs in config)" in err
    assert _listing(tmp_path) == listing and store.stat().st_size == size


@pytest.mark.slow  # ~2 Ray actors loading the model; the executors' own equality test runs in the default suite
def test_ray_search_gives_the_local_result(tmp_path, capsys):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (optional extra 'ray')")
    base = ["search", "--preset", "embedded-41", "--images", "8", "--iterations", "2", "--initial", "3",
            "--children", "2", "--parents", "2", "--threads", "1", "--batch-size", "8",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(base + ["--store", str(tmp_path / "a.sqlite"), "--out", str(tmp_path / "local")]) == 0
    assert main(base + ["--store", str(tmp_path / "b.sqlite"), "--out", str(tmp_path / "ray"), "--executor", "ray",
                        "--actors", "2"]) == 0
    assert capsys.readouterr().out.count("evaluations: 0 new") == 0   # the Ray run evaluated, not read the store
    local, remote = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "ray"))
    for k in ("best", "pareto", "population", "history"):
        assert local[k] == remote[k]


def test_deepcache_uniform_plans_under_a_budget():
    from baselines.deepcache import uniform_plan
    from bench.search.compare import uniform_under

    macs = (0, 8, 21, 37, 55, 70, 85, 90, 94, 97, 100)    # embedded-like: null, partial 1..9, full
    plans = uniform_under(48.0, macs, 100, (1, 2, 3))
    cost = [sum(macs[s.branch] if s.kind == "partial" else 100 for s in p.steps) / 100 for p in plans]
    assert cost == sorted(cost, reverse=True) and max(cost) <= 48.0
    assert plans[0] == uniform_plan(100, 3, 2)           # 34 full + 66 partial(2): 47.86
    assert uniform_plan(100, 2, 1) not in plans          # 50 + 50 x 8 % = 54 > 48


def test_plan_extras_per_layout():
    from bench.models.tiny import DDPM_SCHEDULER
    from bench.search.fitness import plan_extras
    from flexiffusion.search.space import Candidate, SearchSpace

    tile = SearchSpace((4,), (1, 2), (1, 2), 9, 16)
    c = Candidate.of([(1, 2), (2, 1), (1, 1), (2, 2)])
    assert plan_extras(c, tile.compile(c), tile, "ddim") is None
    compact = SearchSpace((4,), (1, 2), (1, 2), 9, 16, layout="compact")
    e = plan_extras(c, compact.compile(c), compact, "ddim")
    assert e.tag == "compact:8" and len(e.scheduler(DDPM_SCHEDULER, 8).timesteps) == 8
    dpm = SearchSpace((4,), (1, 9), (1, 2, 3), 9, 12, solver="dpm")
    d = Candidate.of([(1, 3), (9, 2), (1, 1), (1, 2)])
    e = plan_extras(d, dpm.compile(d), dpm, "dpms3")
    assert e.tag == "dpm:3,2,1,2" and e.scheduler(DDPM_SCHEDULER, 8).order_list == [1, 2, 3, 1, 2, 1, 1, 2]
    import pickle

    assert pickle.loads(pickle.dumps(e)).tag == e.tag      # picklable for Ray actors
