"""Executors: the local executor is the evaluator; a local 2-CPU Ray instance gives the same fitness values."""
from __future__ import annotations

import importlib.util

import pytest

from bench.evaluation.executors import LocalExecutor, make_executor
from bench.evaluation.setting import EvaluationSetting
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

PLANS = ["f p2 n f p3 p3 f n n n", "f p2 n f p3 p3 f p1 n n", "f n n f p1 p1 f f n n", "f p2 n f n n f n f n"]


def _setting():
    return EvaluationSetting.for_images(8, grid_length=10, batch_size=4, threads=1)


def _plans():
    return [Plan.from_tokens(p.split()) for p in PLANS]


def test_unknown_executor():
    with pytest.raises(UserError, match="unknown executor"):
        make_executor("dask", _setting())


def test_ray_gives_the_local_values(tmp_path, monkeypatch):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (optional extra: pip install 'flexiffusion-bench[ray]')")
    from bench.evaluation.executors import RayExecutor

    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path))
    with LocalExecutor(_setting(), cache_dir=tmp_path) as local:
        expected = local.map(_plans())
    with RayExecutor(_setting(), actors=2, cache_dir=tmp_path) as ray_exec:
        got = ray_exec.map(_plans())
        assert len(ray_exec.actors) == 2
    assert [r["fitness"] for r in got] == [r["fitness"] for r in expected]
    assert [r["mse"] for r in got] == [r["mse"] for r in expected]
