"""The search's fast mode (adaptive image counts, exact re-evaluation of the final Pareto set and best) and the
ranking yardstick's statistics: model-free rules, a tiny real fast search, bad input."""
import json
import math
import os

import numpy as np
import pytest

from bench.cli import main
from bench.search import yardstick
from bench.search.screening import ScreenConfig, parent_fraction
from flexiffusion.search.evolution import CandidateFitness, EvolutionConfig, evolve
from flexiffusion.search.space import SearchSpace


@pytest.mark.parametrize("n_p,eps", [(25, 1e-3), (8, 1e-3), (2, 0.5)])
def test_parent_fraction_bounds_the_chance_of_being_a_parent(n_p, eps):
    f = parent_fraction(n_p, eps)
    assert 0 < f < 1 and math.isclose((1 - f) ** (n_p - 1), eps, rel_tol=1e-9)
    assert parent_fraction(25, 1e-3) == pytest.approx(0.2501, abs=1e-4)   # B.2's n_p: the top quarter goes on


def test_margin_scales_with_the_measured_noise():
    sc = ScreenConfig(stages=(32, 96), z=2.0, sigma={32: 0.3, 96: 0.2})
    assert sc.margin(32) == pytest.approx(0.6) and sc.margin(96) == pytest.approx(0.4)
    assert sc.margin(40) == pytest.approx(2.0 * 0.3 * math.sqrt(32 / 40))   # nearest measured count, sqrt(n) scaling
    with pytest.raises(Exception, match="stages must be image counts >= 2"):
        ScreenConfig(stages=(1,))


def test_screened_values_stop_only_candidates_clearly_behind():
    # 10 candidates; the stage value of candidate 9 is far above the others, candidate 8 just above the cutoff
    stage = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 9.0]
    full = [v * 0.9 for v in stage]
    sc = ScreenConfig(stages=(8,), z=1.0, sigma={8: 0.2}, epsilon=1e-3)
    values, stopped = yardstick.screened_values({8: stage}, full, 8, sc)
    assert stopped == 1 and values[9] == 9.0 and values[:9] == full[:9]
    values, stopped = yardstick.screened_values({8: stage}, full, 8, ScreenConfig(stages=(8,), z=100, sigma={8: 1}))
    assert stopped == 0 and values == full


def test_bootstrap_taus_and_noise():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=30)
    out = yardstick.bootstrap_taus({"exact": ref, "reversed": -ref, "noisy": ref + rng.normal(0, 5, 30)}, ref, 200)
    assert out["exact"][0] == pytest.approx(1.0) and out["exact"][3:] == (0.0, 0.0)
    assert out["reversed"][0] == pytest.approx(-1.0) and out["reversed"][4] < 0       # significantly worse
    assert out["noisy"][1] <= out["noisy"][0] <= out["noisy"][2]
    a = np.exp(rng.normal(size=40))
    assert yardstick.sigma_log_diff(a, a) == 0.0
    b = a * np.exp(rng.normal(0, 0.1, 40))
    assert 0.05 < yardstick.sigma_log_diff(a, b) < 0.15          # independent log noise of SD 0.1 on one set


def test_summarize_marks_a_mode_behind_exact_as_not_admissible():
    cfg = yardstick.YardstickConfig(candidates=30, ks=(8, 16), reference_images=32, modes=("bf16",), bootstrap=300,
                                    screen_z=(2, 0))
    rng = np.random.default_rng(1)
    ref = np.exp(rng.normal(size=30))
    records = []
    for i, r in enumerate(ref):
        rec = {("exact", "R", 32): r}
        for k in (8, 16):
            rec[("exact", "A", k)] = r * math.exp(rng.normal(0, 0.02))
            rec[("exact", "B", k)] = r * math.exp(rng.normal(0, 0.02))
            rec[("bf16", "A", k)] = float(rng.permutation(ref)[0])    # a random ranking
        records.append(rec)
    s = yardstick.summarize(records, cfg, n_p=8, screen=ScreenConfig(stages=(8,), sigma={8: 0.05}))
    rows = {(r["mode"], r["k"]): r for r in s["table"]}
    assert rows[("exact", 16)]["kendall_tau"] > 0.9 and rows[("exact", 16)]["admissible"]
    assert not rows[("bf16", 16)]["admissible"] and rows[("bf16", 16)]["diff_hi"] < 0
    assert ("screened z2", 16) in rows and s["noise_floor_tau"][16] > 0.9
    # a smaller margin stops at least as many candidates (z = 0: every one behind the parent fraction's member)
    assert rows[("screened z0", 16)]["stopped"] >= rows[("screened z2", 16)]["stopped"]
    assert rows[("screened z0", 16)]["stopped"] > 0
    assert "admissible" in yardstick.format_table(s)


def test_evolve_shows_the_population_before_each_round():
    space = SearchSpace(segments=(3, 4), branches=(1, 2), intervals=(1, 2), num_branches=3, grid=12)

    class Recording(CandidateFitness):
        def __init__(self):
            self.seen = []

        def observe(self, population):
            self.seen.append([e.digest for e in population])

        def __call__(self, proposals):
            return [len(p.digest) + p.avg_macs for p in proposals]

    fit = Recording()
    result = evolve(space, lambda plan: plan.nfe, fit, 1e9, EvolutionConfig(iterations=3, parents=2, children=2,
                                                                            initial=3, population=4))
    assert fit.seen[0] == [] and len(fit.seen) == 4
    assert all(len(s) >= 1 for s in fit.seen[1:]) and fit.seen[-1] != []
    assert result.history[-1]["iteration"] == 3


def _fast_args(tmp_path, *extra):
    return ["search", "--preset", "embedded-41", "--images", "16", "--iterations", "2", "--initial", "4",
            "--children", "2", "--parents", "2", "--threads", "1", "--batch-size", "16", "--fast",
            "--screen-stages", "8", "--screen-z", "0", "--screen-epsilon", "0.5",
            "--store", str(tmp_path / "s.sqlite"), "--cache-dir", str(tmp_path / "cache"), *extra]


@pytest.mark.slow  # about 45 s alone (model, teacher, two short searches); .ci/run's slow line runs it
def test_tiny_fast_search_reports_exact_values_and_resumes(tmp_path, capsys):
    from bench.search.driver import eval_key
    from bench.store import ResultStore

    out = tmp_path / "o"
    assert main(_fast_args(tmp_path, "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert "fast mode:" in printed and "re-evaluated exactly" in printed
    summary = json.loads((out / "summary.json").read_text())
    fast = summary["fast"]
    assert summary["values"] == "exact re-evaluations" and fast["screened"] >= 1
    exact_key, fast_key = fast["exact_evaluation"], fast["evaluation"]
    assert exact_key != fast_key
    with ResultStore(tmp_path / "s.sqlite") as store:
        # every reported value is an exact evaluation stored under the exact setting's key
        for e in [summary["best"], *summary["pareto"]]:
            rows = {r["metric"]: r["value"] for r in store.get(eval_key(exact_key, e["digest"]))}
            assert rows["fitness"] == e["fitness"]
        stopped = [p for p in fast["population"] if p["screened"]]
        for p in stopped:   # a stopped child: its stage's value on the stage's images, marked
            rows = {r["metric"]: r["value"] for r in store.get(eval_key(fast_key, p["digest"]))}
            assert rows["screened"] == 1 and rows["n_images_used"] == 8
        # a child evaluated on all images: its fast value is the exact one up to float round-off of other batches
        # (measured 1.6e-4 relative on 64 images; tolerance 10x that)
        best_fast = {r["metric"]: r["value"] for r in store.get(eval_key(fast_key, fast["best"]["digest"]))}
        exact_best = {r["metric"]: r["value"] for r in store.get(eval_key(exact_key, fast["best"]["digest"]))}
        assert best_fast["screened"] == 0 and best_fast["n_images_used"] == 16
        assert best_fast["fitness"] == pytest.approx(exact_best["fitness"], rel=2e-3)
    # the same command again replays from the store: identical outputs, nothing evaluated
    assert main(_fast_args(tmp_path, "--out", str(tmp_path / "o2"))) == 0
    assert "evaluations: 0 new" in capsys.readouterr().out
    again = json.loads((tmp_path / "o2" / "summary.json").read_text())
    for k in ("best", "pareto", "fast", "history"):
        assert again[k] == summary[k]


@pytest.mark.parametrize("extra,match", [
    (["--executor", "ray"], "--fast evaluates children stage by stage"),
    (["--fitness", "fid"], "--fast screens rFID against the teacher"),
    (["--screen-stages", "1"], "stages must be image counts >= 2"),
])
def test_fast_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, extra, match):
    assert main(_fast_args(tmp_path, "--out", str(tmp_path / "o"), *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err
    assert os.listdir(tmp_path) == []


def test_bf16_refused_where_the_device_has_no_native_kernels(tmp_path, capsys, monkeypatch):
    from bench.evaluation import execution

    monkeypatch.setattr(execution, "bf16_native", lambda device: False)
    args = ["search", "--preset", "embedded-41", "--dtype", "bf16", "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "no native bfloat16 kernels" in err and "use --dtype fp32" in err and "\n" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # three tiny fast searches (about 1.5 min alone); .ci/run's slow line runs it
def test_interrupted_fast_search_resumes_to_the_uninterrupted_result(tmp_path, capsys, monkeypatch):
    from bench.search.screening import Screening

    def args(d, *extra):
        return ["search", "--preset", "embedded-41", "--images", "16", "--iterations", "2", "--initial", "5",
                "--children", "3", "--parents", "2", "--threads", "1", "--batch-size", "16", "--fast",
                "--screen-stages", "8", "--screen-z", "0", "--screen-epsilon", "0.5",
                "--store", str(d / "s.sqlite"), "--cache-dir", str(d / "cache"), "--out", str(d / "o"), *extra]

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(args(tmp_path / "a")) == 0
    whole = json.loads((tmp_path / "a" / "o" / "summary.json").read_text())
    original, calls = Screening.evaluate_one, []

    def dies_at_the_fourth(self, *a, **k):   # killed inside the initial population's round
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(Screening, "evaluate_one", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        main(args(tmp_path / "b"))
    monkeypatch.setattr(Screening, "evaluate_one", original)
    assert main(args(tmp_path / "b")) == 0
    assert "3 read from the store" in capsys.readouterr().out
    resumed = json.loads((tmp_path / "b" / "o" / "summary.json").read_text())
    assert whole["fast"]["screened"] >= 1
    for k in ("best", "pareto", "history"):
        assert resumed[k] == whole[k]
    assert {k: v for k, v in resumed["fast"].items() if "evaluation" not in k} == \
        {k: v for k, v in whole["fast"].items() if "evaluation" not in k}


@pytest.mark.slow  # a tiny yardstick and a tiny three-arm benchmark through the commands (about 3 min alone)
def test_yardstick_and_fast_bench_commands_run_end_to_end(tmp_path, capsys):
    assert main(["search-yardstick", "--preset", "embedded-50", "--candidates", "6", "--k", "8,16",
                 "--reference-images", "24", "--search-images", "8", "--search-iterations", "1", "--bootstrap", "50",
                 "--threads", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "ys")]) == 0
    out = capsys.readouterr().out
    assert "tau vs ref" in out and "sigma of a paired log-rFID difference" in out
    ys = json.loads((tmp_path / "ys" / "yardstick.json").read_text())
    assert ys["n_candidates"] == 6 and sum(c["from_search"] for c in ys["candidates"]) == 3
    assert {r["mode"] for r in ys["table"]} == {"exact"} and set(ys["sigma_log_diff"]) == {"8", "16"}
    assert main(["search-fast-bench", "--preset", "embedded-41", "--images", "16", "--iterations", "2", "--initial",
                 "4", "--parents", "2", "--children", "2", "--population", "10", "--naive-evaluations", "3",
                 "--exact-iterations", "1", "--final-images", "16", "--threads", "1", "--batch-size", "16",
                 "--work-dir", str(tmp_path / "fb"), "--json", str(tmp_path / "fb.json")]) == 0
    rep = json.loads((tmp_path / "fb.json").read_text())["seeds"][0]
    assert rep["naive"]["requested_evaluations"] == 3 and rep["speedup_projected"] > 0
    assert set(rep["final"]) == {"fast", "exact"} and rep["fast"]["requested_evaluations"] == 8
