"""Benchmarks' session setup: an injected slowdown from ``FLEXBENCH_INJECT`` (benchmarks/inject.py), announced once
and recorded in the benchmark JSON's machine info so a file measured with it is never mistaken for a clean one."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _injected_slowdown():
    from benchmarks.inject import ENV, from_environment

    remove = from_environment()
    if remove is not None:
        print(f"\nbenchmarks: injected slowdown {ENV}={os.environ[ENV]} (benchmarks/inject.py)")
    yield
    if remove is not None:
        remove()


def pytest_benchmark_update_machine_info(config, machine_info):
    from benchmarks.inject import ENV

    if os.environ.get(ENV):
        machine_info["injected_slowdown"] = os.environ[ENV]
