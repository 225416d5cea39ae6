"""The method registry: every method from plain data and back, the plans and schedulers it builds, type checks,
and the checks that need the model (branches, grid, orders, ToMe, AutoDiffusion's budget)."""
import json

import pytest

from baselines.deepcache import DeepCacheConfig, quad_full_steps
from baselines.registry import METHODS, Experiment, config_from_dict, experiments_from_json
from baselines.table2 import table2_experiments
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler_for_grid


@pytest.fixture(scope="module")
def bundle():
    from bench.models import load_model

    return load_model("embedded")


def test_every_method_round_trips_through_data():
    assert set(METHODS) == {"teacher", "ddim", "plms", "dpm-multistep", "dpm-singlestep", "deepcache",
                            "deepcache-plus", "tome", "pattern", "random", "flexiffusion", "autodiffusion"}
    for name, method in METHODS.items():
        e = Experiment.from_dict({"method": name})
        assert e.config == method.config()
        again = Experiment.from_dict(json.loads(json.dumps(e.to_dict())))
        assert again == e
    assert Experiment.from_dict({"method": "tome"}).tome is not None  # the tome method turns ToMe on
    nested = Experiment.from_dict({"method": "autodiffusion", "config": {"k": 6, "evolution": {"epochs": 2}}})
    assert nested.config.k == 6 and nested.config.evolution.epochs == 2 and nested.config.evolution.top_k == 10


@pytest.mark.parametrize("data,match", [
    ({"method": "heun"}, "unknown method 'heun'"),
    ({"method": "ddim", "config": {"order": 2}}, "has no field 'order'"),
    ({"method": "deepcache", "config": {"interval": 2.5}}, r"interval = 2.5: expected int"),
    ({"method": "deepcache", "config": {"pow": "high"}}, "expected float or NoneType"),
    ({"method": "autodiffusion", "config": {"evolution": {"seed": True}}}, "evolution.seed = True"),
    ({"method": "ddim", "tome": {"ratio": "half"}}, "tome.ratio"),
    ({"config": {}}, "an experiment is an object"),
    ({"method": "ddim", "colour": 1}, "no field 'colour'"),
])
def test_bad_experiment_data(data, match):
    with pytest.raises(UserError, match=match):
        Experiment.from_dict(data)


def test_experiment_file_forms():
    one = experiments_from_json('{"method": "ddim", "config": {"steps": 8}}')
    assert len(one) == 1 and one[0].config.steps == 8
    assert len(experiments_from_json('[{"method": "plms"}, {"method": "teacher"}]')) == 2
    with pytest.raises(UserError, match="malformed experiment JSON"):
        experiments_from_json("{oops")
    with pytest.raises(UserError, match="lists no experiments"):
        experiments_from_json("[]")


def _plan(data):
    e = Experiment.from_dict(data)
    return e.spec.plan(e.config)


def test_plans_and_schedulers(bundle):
    assert _plan({"method": "teacher"}) == (Plan.full(100), "ddim")
    assert _plan({"method": "ddim", "config": {"steps": 7}}) == (Plan.full(7), "ddim")
    plan, sched = _plan({"method": "plms", "config": {"steps": 10}})
    assert len(plan) == 11 and sched == "plms"  # PLMS's grid repeats one timestep
    for kind, prefix in (("multistep", "dpm"), ("singlestep", "dpm-singlestep")):
        for order in (1, 2, 3):
            plan, sched = _plan({"method": f"dpm-{kind}", "config": {"steps": 9, "order": order}})
            assert plan == Plan.full(9) and sched == f"{prefix}{order}"
            s = make_scheduler_for_grid(sched, bundle.scheduler_config, 9)
            assert len(s.timesteps) == 9 and s.config.solver_order == order
            if kind == "singlestep":  # one order per step; a run 1, 2, .., k is one k-th order interval
                assert max(s.order_list) == order and len(s.order_list) == 9
    plan, _ = _plan({"method": "deepcache-plus", "config": {"steps": 50, "interval": 5, "branch": 2, "form": "ldm"}})
    assert [i for i, s in enumerate(plan.steps) if s.kind == "full"] == quad_full_steps(50, 10, 1.5)  # default pow
    plan, _ = _plan({"method": "deepcache-plus", "config": {"steps": 50, "interval": 5, "branch": 2}})
    assert [i for i, s in enumerate(plan.steps) if s.kind == "full"] == [0, 5, 9, 13, 17, 21, 26, 31, 37, 43]
    plan, _ = _plan({"method": "deepcache", "config": {"steps": 10, "interval": 5, "branch": 1, "scheduler": "plms"}})
    assert plan.tokens() == ["f"] + ["p1"] * 4 + ["f"] + ["p1"] * 4 + ["f"]  # the plan covers PLMS's 11 timesteps


def test_deepcache_on_dpm_solver_3_table6():
    """Table 6: DeepCache with interval 2, DeepCache's branch 1 (= our partial(2): its id is our b - 1) on the
    third-order DPM-Solver (multistep), as a plain plan; the paper's 94.28 / 57.2 G fit b = 2 (docs/conformance.md)."""
    e = next(x for x in table2_experiments(ad_steps=()) if x.label.startswith("DeepCache N2 b2 on DPM-Solver-3"))
    plan, sched = e.spec.plan(e.config)
    assert sched == "dpm3" and plan.tokens() == ["f", "p2"] * 7 + ["f"] and plan.nfe == 15
    assert e.config == DeepCacheConfig(15, 2, 2, scheduler="dpm3")


@pytest.mark.parametrize("data,match", [
    ({"method": "deepcache", "config": {"branch": 10}}, "branch 10 out of range: this U-Net has branches 1..9"),
    ({"method": "ddim", "config": {"steps": 1001}}, "exceed the model's training grid of 1000"),
    ({"method": "deepcache", "config": {"steps": 1500, "interval": 3}}, "exceed the model's training grid"),
    ({"method": "autodiffusion", "config": {"k": 1001}}, r"K = 1001 steps: choose 1..1000"),
    ({"method": "dpm-multistep", "config": {"order": 4}}, "order 4 not supported: choose 1, 2 or 3"),
    ({"method": "dpm-singlestep", "config": {"order": 0}}, "order 0 not supported"),
    ({"method": "tome"}, "ToMe needs transformer blocks"),
    ({"method": "deepcache", "tome": {"ratio": 0.5}}, "UNet2DModel"),
    ({"method": "autodiffusion", "config": {"k": 4, "budget_layers": 80}}, "below what any candidate can reach"),
    ({"method": "deepcache-plus", "config": {"steps": 10, "interval": 2, "center": 5}}, "no pow in"),
    ({"method": "deepcache-plus", "config": {"form": "uniform"}}, r"'\+' form 'uniform'"),
    ({"method": "deepcache", "config": {"scheduler": "euler"}}, "unknown scheduler 'euler'"),
])
def test_validation_against_the_model(bundle, data, match):
    with pytest.raises(UserError, match=match):
        Experiment.from_dict(data).validate(bundle)


def test_table2_lists_the_papers_rows():
    labels = [e.label for e in table2_experiments()]
    for needed in ["DDIM 100 (teacher)", "DeepCache-A", "DeepCache-B", "DeepCache-C", "DeepCache-D",
                   "DeepCache-C+ (sd)", "DeepCache-D+ (ldm)", "PLMS 10", "DPM-Solver-1 multistep 10",
                   "DPM-Solver-3 singlestep 10", "AutoDiffusion 4", "AutoDiffusion 10", "DDIM 4", "DDIM 10"]:
        assert needed in labels
    assert len(set(labels)) == len(labels)
    intervals = {e.label: e.config.interval for e in table2_experiments() if e.method == "deepcache"}
    assert [intervals[f"DeepCache-{x}"] for x in "ABCD"] == [2, 5, 10, 20]


def test_config_from_dict_plain():
    assert config_from_dict(DeepCacheConfig, {"interval": 3, "pow": 2}) == DeepCacheConfig(interval=3, pow=2)
    with pytest.raises(UserError, match="must be an object"):
        config_from_dict(DeepCacheConfig, [1, 2])


# ---- methods that are schedules or stored searches: pattern, random, flexiffusion -------------------------------
def test_pattern_and_random_are_registry_methods():
    plan, sched = _plan({"method": "pattern", "config": {"pattern": "f p3 p3", "steps": 7}})
    assert plan.tokens() == ["f", "p3", "p3", "f", "p3", "p3", "f"] and sched == "ddim"
    data = {"method": "random", "config": {"seed": 0, "steps": 100, "intervals": [1, 2, 3], "branches": [1, 2]}}
    plan, sched = _plan(data)
    assert len(plan) == 100 and plan.tokens()[0] == "f" and sched == "ddim" and plan == _plan(data)[0]
    with pytest.raises(UserError, match="needs config field 'pattern'"):
        Experiment.from_dict({"method": "pattern"}).plan()
    with pytest.raises(UserError, match="start with a full step"):
        Experiment.from_dict({"method": "pattern", "config": {"pattern": "p1 f"}}).plan()
    with pytest.raises(UserError, match="expected a list of integers"):
        Experiment.from_dict({"method": "random", "config": {"branches": "123"}})


def test_flexiffusion_resolves_a_stored_search(tmp_path, bundle, searched_store):
    """The flexiffusion method's plan is a stored search's best plan, read through the harness's context; a search
    that is not stored raises MissingInput naming it, the stored ones and the command that stores it."""
    from baselines.registry import Context, MissingInput
    from bench.experiments.searched import method_context
    from bench.store import ResultStore

    e = Experiment.from_dict({"method": "flexiffusion", "config": {"preset": "embedded-50"}, "label": "F"})
    assert e.plan() is None and e.validate(bundle) is e       # nothing stored needed to validate the config
    with pytest.raises(UserError, match="needs a stored search"):
        Experiment.from_dict({"method": "flexiffusion"}).plan()
    with pytest.raises(UserError, match="reads its plan from a stored search"):
        e.resolve(Context())
    with ResultStore(tmp_path / "s.sqlite") as store:
        ctx = method_context(store, progress=False)
        with pytest.raises(MissingInput, match=r"no stored search of preset embedded-50 .*\(none\)") as missing:
            e.resolve(ctx)
        assert missing.value.command.startswith("flexbench search --preset embedded-50 --seed 0 --store FILE")
    from conftest import copy_store

    source, best = searched_store
    with ResultStore(copy_store(source, tmp_path / "searched.sqlite")) as store:
        ctx = method_context(store, progress=False)
        r = e.resolve(ctx)
        assert r.config.search == "embedded-50-tile-s0" and r.plan()[0].tokens() == best["embedded-50-tile-s0"]
        assert r.describe() == "best plan of search embedded-50-tile-s0" and r.resolve(ctx) == r
        named = Experiment.from_dict({"method": "flexiffusion", "config": {"search": "other"}}).resolve(ctx)
        assert named.plan() == (Plan.from_tokens(best["other"]), "ddim")
        with pytest.raises(MissingInput, match=r"no stored search 'nope' .*embedded-50-tile-s0, other"):
            Experiment.from_dict({"method": "flexiffusion", "config": {"search": "nope"}}).resolve(ctx)
        run = e.build(bundle, ctx)
        assert run.method == "flexiffusion" and run.label == "F" and run.plan.tokens() == best["embedded-50-tile-s0"]
        assert run.config["config"]["search"] == "embedded-50-tile-s0" and run.scheduler == "ddim"


def _run_cli(tmp_path, *args):
    from bench.cli import main

    return main(["run", *args, "--images", "10", "--teacher-steps", "4", "--batch-size", "5", "--quiet",
                 "--store", str(tmp_path / "results.sqlite"), "--cache-dir", str(tmp_path / "cache")])


def test_run_naming_a_search_that_is_not_stored_is_one_line_and_writes_nothing(tmp_path, capsys, searched_store):
    from conftest import copy_store

    assert _run_cli(tmp_path, "flexiffusion", "--search", "nope") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no stored search 'nope'" in err[0] and "(none)" in err[0], err
    assert list(tmp_path.iterdir()) == []                    # neither the store nor the cache was created
    copy_store(searched_store[0], tmp_path / "results.sqlite")
    before = (tmp_path / "results.sqlite").read_bytes()
    assert _run_cli(tmp_path, "flexiffusion", "--search", "nope") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0] and "embedded-50-tile-s0" in err[0], err
    assert (tmp_path / "results.sqlite").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "results.sqlite"]
    assert _run_cli(tmp_path, "ddim", "--search", "x") == 2   # a method without the field
    assert "has no field 'search'" in capsys.readouterr().err


@pytest.mark.slow
def test_run_a_stored_search_as_a_row(tmp_path, capsys, searched_store):
    from conftest import copy_store

    from bench.cli import main

    copy_store(searched_store[0], tmp_path / "results.sqlite")
    argv = ["run", "flexiffusion", "--images", "10", "--teacher-steps", "100", "--batch-size", "10", "--quiet",
            "--store", str(tmp_path / "results.sqlite"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv + ["--preset", "embedded-50"]) == 0
    out = capsys.readouterr().out
    assert "flexiffusion[embedded-50-tile-s0]" in out and "stored in" in out
    assert main(argv + ["--search", "embedded-50-tile-s0", "--preset", "embedded-50"]) == 0
    assert "reused from" in capsys.readouterr().out
