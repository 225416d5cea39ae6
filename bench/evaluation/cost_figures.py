"""The two wall-clock figures of the cost issue, measured with the interleaved latency harness:

1. engine overhead: a full step through the step engine against the model's own forward (target <= 3%);
2. DeepCache-like plan: wall-clock speedup of ``uniform_plan(n, interval, branch)`` over the all-full plan against
   its MAC speedup (paper convention), end to end through the sampler (target >= 0.9x of the MAC speedup).

Every variant runs once per round; the figures are medians over rounds of the per-round ratios (ratios of medians
beside them), so load from other processes on a shared machine, which changes between rounds, cancels to first
order.  ``flexbench cost-figures`` and ``benchmarks/cost_figures.py`` print them.
"""
from __future__ import annotations

import statistics

from baselines.deepcache import uniform_plan
from flexiffusion.schedule import Plan

from bench.cost.cases import LatencyCase
from bench.cost.plan_latency import measure_plans
from bench.cost.step_latency import engine_overhead, measure_steps
from bench.cost.schedule_cost import CostModel


def cost_figures(preset: str = "ddpm-cifar10", batch_size: int = 16, threads: int | None = 2, steps: int = 20,
                 interval: int = 5, branches: tuple[int, ...] = (1, 2), repeats: int = 5, warmup: int = 1,
                 device: str = "cpu", progress: bool = False) -> dict:
    cost = CostModel.for_preset(preset)
    step_case = LatencyCase(preset, batch_size=batch_size, threads=threads, device=device, warmup=warmup,
                            repeats=repeats, branches=tuple(branches), native=True)
    steps_report = measure_steps(step_case, progress=progress)
    full = steps_report.get("full").median
    full_values = steps_report.get("full").values
    per_step = {b: {"wall_fraction": statistics.median(p / f for p, f in
                                                       zip(steps_report.get("partial", b).values, full_values)),
                    "mac_fraction": cost.step_macs[b] / cost.full_macs} for b in branches}

    plans = [Plan.full(steps, name=f"full-{steps}")]
    plans += [uniform_plan(steps, interval, b, name=f"uniform-{steps}-N{interval}-b{b}") for b in branches]
    plan_case = LatencyCase(preset, batch_size=batch_size, threads=threads, device=device, warmup=warmup,
                            repeats=repeats)
    plan_report = measure_plans(plan_case, plans)
    full_plan = plan_report.measurements[0]
    ref = full_plan.median
    plan_rows = []
    for plan, m in zip(plans[1:], plan_report.measurements[1:]):
        # Median over rounds of the per-round ratio (the plans of a round run back to back): robust to load that
        # changes between rounds; the ratio of medians is kept beside it.
        wall = statistics.median(f / v for f, v in zip(full_plan.values, m.values))
        mac = cost.speedup(plan)
        plan_rows.append({"plan": plan.name, "nfe": plan.nfe, "avg_macs_g": cost.cost(plan).avg_macs_g,
                          "mac_speedup": mac, "wall_speedup": wall, "wall_over_mac": wall / mac,
                          "wall_speedup_unpaired": ref / m.median, "median_s": m.median, "iqr_s": m.iqr})
    return {
        "preset": preset, "batch_size": batch_size, "environment": steps_report.environment,
        "engine_overhead": engine_overhead(steps_report),
        "engine_overhead_unpaired": engine_overhead(steps_report, paired=False),
        "native_median_s": steps_report.get("native").median, "native_iqr_s": steps_report.get("native").iqr,
        "full_median_s": full, "full_iqr_s": steps_report.get("full").iqr,
        "partial": per_step, "full_plan_median_s": ref, "plans": plan_rows,
        "raw": {"steps": steps_report.to_dict(), "plans": plan_report.to_dict()},
    }


def format_figures(fig: dict) -> str:
    env = fig["environment"]
    lines = [f"{fig['preset']}, batch {fig['batch_size']}, {env['threads']} threads, {env['device']} "
             f"({env['device_name']}, {env['cpu_count']} cores), torch {env['torch']}, diffusers {env['diffusers']}",
             f"engine overhead on a full step: {100 * fig['engine_overhead']:+.2f}% median of paired rounds, "
             f"{100 * fig['engine_overhead_unpaired']:+.2f}% ratio of medians (native "
             f"{fig['native_median_s'] * 1e3:.1f} ms, IQR {fig['native_iqr_s'] * 1e3:.1f}; full "
             f"{fig['full_median_s'] * 1e3:.1f} ms, IQR {fig['full_iqr_s'] * 1e3:.1f}; target <= 3%)"]
    for b, r in fig["partial"].items():
        lines.append(f"partial({b}): wall {r['wall_fraction']:.3f} of a full step, MACs {r['mac_fraction']:.3f}")
    lines.append(f"all-full plan: {fig['full_plan_median_s']:.2f} s per batch")
    for r in fig["plans"]:
        lines.append(f"{r['plan']}: NFE {r['nfe']}, avg {r['avg_macs_g']:.3f} G, MAC speedup {r['mac_speedup']:.2f}x,"
                     f" wall-clock {r['wall_speedup']:.2f}x (paired rounds; ratio of medians "
                     f"{r['wall_speedup_unpaired']:.2f}x) = {r['wall_over_mac']:.2f} of the MAC speedup "
                     f"(target >= 0.9)")
    return "\n".join(lines)
