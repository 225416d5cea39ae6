"""pytest-benchmark suite of the cost metrics (not part of the default test run: ``testpaths = tests``).

    pytest benchmarks/ --benchmark-enable [--benchmark-autosave]     # store baselines in .benchmarks/
    FLEXBENCH_BENCH_THREADS=1 pytest benchmarks/ --benchmark-enable   # on a machine shared with other jobs

Groups: ``engine-overhead`` (DDPM CIFAR U-Net, batch 16: native forward vs a full step through the step engine),
``partial`` (partial steps), ``plan`` (end-to-end sampling of the all-full plan and DeepCache-like uniform plans),
``schedule-cost`` (costing one candidate plan with the lookup table, as the evolutionary search does).
The ratios (engine overhead, wall-clock / MAC speedup) are reported by ``test_summary`` from the stored stats;
targets: overhead <= 3%, wall-clock speedup >= 0.9x the MAC speedup.  ``benchmarks/cost_figures.py`` measures the same
ratios with interleaved rounds, which is more robust on a loaded machine.
"""
import os
import random

import pytest
import torch

from baselines.deepcache import uniform_plan
from flexiffusion.schedule import Plan, Step
from flexiffusion.threads import num_threads

PRESET = "ddpm-cifar10"
BATCH = int(os.environ.get("FLEXBENCH_BENCH_BATCH", 16))
THREADS = int(os.environ.get("FLEXBENCH_BENCH_THREADS", 2))
ROUNDS = int(os.environ.get("FLEXBENCH_BENCH_ROUNDS", 5))
PLAN_STEPS, INTERVAL, BRANCHES = 20, 5, (1, 2)

RESULTS: dict = {}


def _median(benchmark):
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


@pytest.fixture(scope="module")
def cifar():
    from bench.presets import build

    with num_threads(THREADS):
        yield build(PRESET, batch_size=BATCH)


@pytest.fixture(scope="module")
def cost():
    from bench.cost.schedule_cost import CostModel

    return CostModel.for_preset(PRESET)


@pytest.mark.benchmark(group="engine-overhead")
def test_native_forward(benchmark, cifar):
    with torch.no_grad():
        benchmark.pedantic(lambda: cifar.unet(cifar.sample, cifar.timestep), rounds=ROUNDS, warmup_rounds=1)
    RESULTS["native"] = _median(benchmark)


@pytest.mark.benchmark(group="engine-overhead")
def test_engine_full_step(benchmark, cifar):
    from flexiffusion.engine import StepEngine

    engine = StepEngine.attach(cifar.unet)

    def step():
        with engine.step(Step.full()):
            cifar.unet(cifar.sample, cifar.timestep)
    try:
        with torch.no_grad():
            benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1)
    finally:
        engine.detach()
    RESULTS["full"] = _median(benchmark)


@pytest.mark.benchmark(group="partial")
@pytest.mark.parametrize("branch", BRANCHES)
def test_partial_step(benchmark, cifar, cost, branch):
    from flexiffusion.engine import StepEngine

    engine = StepEngine.attach(cifar.unet)

    def step():
        with engine.step(Step.partial(branch)):
            cifar.unet(cifar.sample, cifar.timestep)
    try:
        with torch.no_grad():
            with engine.step(Step.full()):
                cifar.unet(cifar.sample, cifar.timestep)
            benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1)
    finally:
        engine.detach()
    benchmark.extra_info["mac_fraction"] = cost.step_macs[branch] / cost.full_macs
    RESULTS[f"partial:{branch}"] = _median(benchmark)


def _plan_runner(cifar, plan):
    from bench.cost.plan_latency import preset_denoiser
    from flexiffusion.engine import StepEngine
    from flexiffusion.sampler import sample
    from flexiffusion.schedulers import make_scheduler_for_grid

    preset = cifar.preset
    engine = StepEngine.attach(cifar.unet)
    denoiser, cond = preset_denoiser(preset, cifar.unet, engine, False, BATCH)
    noise = torch.randn((BATCH, *preset.sample_shape), generator=torch.Generator().manual_seed(0))

    def run():
        sched = make_scheduler_for_grid("ddim", dict(preset.scheduler_config), len(plan))
        with torch.no_grad():
            sample(denoiser, sched, plan, noise, cond)
    return run, engine


PLANS = {"full": Plan.full(PLAN_STEPS)}
PLANS.update({f"uniform-b{b}": uniform_plan(PLAN_STEPS, INTERVAL, b) for b in BRANCHES})


@pytest.mark.benchmark(group="plan")
@pytest.mark.parametrize("name", list(PLANS))
def test_plan(benchmark, cifar, cost, name):
    plan = PLANS[name]
    run, engine = _plan_runner(cifar, plan)
    try:
        benchmark.pedantic(run, rounds=max(2, ROUNDS // 2), warmup_rounds=1)
    finally:
        engine.detach()
    benchmark.extra_info.update({"nfe": plan.nfe, "avg_macs_g": cost.cost(plan).avg_macs_g,
                                 "mac_speedup": cost.speedup(plan)})
    RESULTS[f"plan:{name}"] = _median(benchmark)


@pytest.mark.benchmark(group="schedule-cost")
def test_schedule_cost_lookup(benchmark, cost):
    """Costing one 100-step candidate (Algorithm 1's cost estimator): microseconds."""
    rng = random.Random(0)
    choices = [Step.full(), Step.null()] + [Step.partial(b) for b in range(1, cost.num_branches + 1)]
    plans = [Plan((Step.full(),) + tuple(rng.choice(choices) for _ in range(99))) for _ in range(100)]
    it = iter(range(10**9))
    benchmark(lambda: cost.avg_macs(plans[next(it) % 100]))


def test_summary(capsys):
    """The ratios from the stats above (skipped when benchmarks are disabled)."""
    if RESULTS.get("native") is None or RESULTS.get("full") is None:
        pytest.skip("benchmarks disabled: run with --benchmark-enable")
    from bench.cost.schedule_cost import CostModel

    cost = CostModel.for_preset(PRESET)
    lines = [f"engine overhead on a full step: {100 * (RESULTS['full'] / RESULTS['native'] - 1):+.2f}% "
             f"(target <= 3%)"]
    for b in BRANCHES:
        if RESULTS.get(f"partial:{b}"):
            lines.append(f"partial({b}): wall {RESULTS[f'partial:{b}'] / RESULTS['full']:.3f} of a full step, "
                         f"MACs {cost.step_macs[b] / cost.full_macs:.3f}")
    full = RESULTS.get("plan:full")
    for name, plan in PLANS.items():
        if name != "full" and full and RESULTS.get(f"plan:{name}"):
            wall, mac = full / RESULTS[f"plan:{name}"], cost.speedup(plan)
            lines.append(f"{name} ({PLAN_STEPS} steps, interval {INTERVAL}): wall-clock {wall:.2f}x, MACs {mac:.2f}x, "
                         f"ratio {wall / mac:.2f} (target >= 0.9)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
