"""AutoDiffusion on the shared evaluation machinery: prefix reuse within a timestep grid bit-identical to sampling
from noise, evaluations in the results store (dedup, replay without a model), kill -9 at several points then an
identical result, Ray identical to local.  The subprocess tests (kill -9, Ray) are marked slow (about 2 min of
CPU; 18 min wall on the shared host at load 10)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from baselines.autodiffusion.candidate import Candidate
from baselines.autodiffusion.sampling import candidate_plan
from bench.search.autodiffusion import EVAL_PREFIX, StoredEvaluation, candidate_extras, step_tokens
from bench.evaluation.evaluator import Evaluator
from bench.evaluation.setting import EvaluationSetting
from bench.store import ResultStore

JOB = Path(__file__).parent / "autodiffusion_job.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1])] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}

A = Candidate.make([(900, {0}), (600, ()), (300, {1}), (50, ())])
B = Candidate.make([(900, {0}), (600, ()), (300, ()), (50, {2})])      # same grid, first 2 drop sets shared
C = Candidate.make([(900, {0}), (600, ()), (200, {1}), (50, ())])      # same first 2 (t, drops), another grid


@pytest.fixture(scope="module")
def setting():
    return EvaluationSetting.for_images(8, grid_length=10, batch_size=4, threads=1)


@pytest.fixture(scope="module")
def evaluator(setting, tmp_path_factory):
    return Evaluator(setting, cache_dir=tmp_path_factory.mktemp("cache")).prepare()


def test_tokens_and_tags():
    assert step_tokens(A) == ("900:0", "600:", "300:1", "50:")
    assert candidate_extras(A).tag == candidate_extras(B).tag != candidate_extras(C).tag


def test_prefix_reuse_within_a_grid_is_bit_identical(evaluator):
    evaluator.states = type(evaluator.states)(1 << 28)
    with torch.no_grad():
        evaluator.images(candidate_plan(A), candidate_extras(A))
        for cand, shared in ((B, 2), (C, 0), (A, 3)):
            got, info = evaluator.images(candidate_plan(cand), candidate_extras(cand))
            fresh, _ = evaluator.images(candidate_plan(cand), candidate_extras(cand), reuse=False)
            assert info["resumed_at"] == shared
            assert torch.equal(got, fresh)
    # the state after 2 steps depends on t_2 as well: C's differs from A's although (t_i, drops_i) agree for i < 2
    a2, _ = evaluator.images(candidate_plan(A), candidate_extras(A), reuse=False)
    c2, _ = evaluator.images(candidate_plan(C), candidate_extras(C), reuse=False)
    assert not torch.equal(a2, c2)


def test_store_dedup_and_replay_without_a_model(setting, tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as store:
        ev = StoredEvaluation(setting, store, cache_dir=tmp_path / "cache")
        values = ev.many([A, B, A])
        assert ev.done == 2 and values[0] == values[2]
        assert len(store.keys(EVAL_PREFIX)) == 2
        rows = {r["metric"]: r["value"] for r in store.get(ev.key(B))}
        assert rows["fitness"] == rows["rfid"] == values[1] and rows["nfe"] == 4
        again = StoredEvaluation(setting, store)
        assert again.many([B, A]) == [values[1], values[0]] and again.done == 0 and again._executor is None


def _job(tmp, *extra):
    return subprocess.run([sys.executable, str(JOB), str(tmp / "s.sqlite"), str(tmp / "out.json"), *extra],
                          env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    r = _job(tmp)
    assert r.returncode == 0, r.stderr
    return json.loads((tmp / "out.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kill", [["--kill-put", "1"], ["--kill-put", "7", "--after"], ["--kill-put", "15"]])
def test_kill_9_then_rerun_is_identical(tmp_path, reference, kill):
    r = _job(tmp_path, *kill)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with ResultStore(tmp_path / "s.sqlite") as store:
        committed = len(store.keys(EVAL_PREFIX))
        assert all(store.get(k) for k in store.keys())
    expect = int(kill[1]) - (0 if "--after" in kill else 1)
    assert committed == expect
    r = _job(tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == reference
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert len(store.keys(EVAL_PREFIX)) == reference["evaluations"]


@pytest.mark.slow
def test_ray_gives_the_local_result(tmp_path, reference):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (optional extra: pip install 'flexiffusion-bench[ray]')")
    r = _job(tmp_path, "--executor", "ray")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == reference
