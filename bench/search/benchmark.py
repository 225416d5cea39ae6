"""The naive-vs-fast search benchmark (issue 9 section 5): the same seeded Algorithm 1 run twice on one setting.

* **naive**: Algorithm 1 as written: every child evaluated, even one identical to an earlier candidate, each
  sampled from noise (no results store, no state store).
* **fast**: the search driver over a results store (a candidate already evaluated under the setting is read
  back: dedup) and the evaluator's prefix reuse (a candidate resumes from the deepest stored sampler state of a
  shared token prefix).

Both eager fp32.  Reported: wall time, evaluations per hour (the fitness values Algorithm 1 asked for, per hour of
search), the speed-up, proof that every fitness value is identical (and the final population and best candidate),
where the time goes (sampling, features, distance, state-store I/O, the rest: search logic and results-store I/O),
and the U-Net work in image-steps, split exactly into what dedup and what prefix reuse saved.

Then the execution options on top: the fast run's evaluations, in the same order, evaluated again with prefix reuse
under each option (its own teacher in the same mode): speed-up against the eager fp32 evaluations and Kendall's tau
between the fitness values with and without the option.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from flexiffusion.errors import UserError
from flexiffusion.search.evolution import CandidateFitness

from bench.evaluation.setting import EvaluationSetting, ExecutionMode

STAGES = ("sampling_s", "features_s", "distance_s", "io_s")
OPTIONS = {"channels_last": ExecutionMode(channels_last=True), "bf16": ExecutionMode(dtype="bf16"),
           "compile": ExecutionMode(compile=True)}


@dataclass
class BenchCase:
    """One benchmark: preset (space, budget, Algorithm 1 settings), images per candidate, iterations, seed."""

    preset: str = "embedded-50"
    images: int = 64
    iterations: int = 10
    seed: int = 0
    threads: int | None = 1
    batch_size: int = 250
    layout: str = "tile"
    options: tuple[str, ...] = ()
    keep_features: bool = False  # states keep the space's branches' features (more memory per state)
    n_m: int | None = None       # Algorithm 2's n_m (None: the preset's / the default)
    initial: int | None = None   # initial population size (None: the preset's)
    parents: int | None = None   # Algorithm 1's n_p, n_c, n_u (None: the preset's; B.2: 25, 5, 300)
    children: int | None = None
    population: int | None = None

    def __post_init__(self):
        unknown = [o for o in self.options if o not in OPTIONS]
        if unknown:
            raise UserError(f"unknown execution option(s) {', '.join(unknown)}: choose from {', '.join(OPTIONS)}")


def _search_parts(case: BenchCase):
    from bench.search.setup import search_config as _config, space_of
    from bench.search.presets import get_preset

    preset = get_preset(case.preset)
    space, cost, budget = space_of(preset, layout=case.layout)
    config = _config(preset, iterations=case.iterations, seed=case.seed, n_m=case.n_m, initial=case.initial,
                     parents=case.parents, children=case.children, population=case.population)
    setting = EvaluationSetting.for_images(case.images, model=preset.model, scheduler=preset.scheduler,
                                           grid_length=space.grid, batch_size=min(case.batch_size, case.images),
                                           threads=case.threads)
    return preset, space, cost, budget, config, setting


class _Recorder(CandidateFitness):
    """The fitness of a run's proposals (candidate and compiled plan): evaluator results kept in call order."""

    def __init__(self, evaluator, reuse: bool, extras):
        self.evaluator, self.reuse, self.extras = evaluator, reuse, extras
        self.results: list[tuple[str, dict]] = []  # (plan digest, result)

    def rows(self, proposals, space=None) -> list[dict]:
        out = self.evaluator.evaluate([p.plan for p in proposals], [self.extras(p) for p in proposals],
                                      reuse=self.reuse)
        self.results += [(p.digest, r) for p, r in zip(proposals, out)]
        return out

    def __call__(self, proposals) -> list[float]:
        return [r["fitness"] for r in self.rows(proposals)]

    def stage_totals(self) -> dict:
        return {k: sum(r[k] for _, r in self.results) for k in STAGES}

    def work(self) -> int:
        return sum(r["unet_image_steps"] for _, r in self.results)


def _arm(name: str, wall: float, requested: int, rec: _Recorder, teacher_s: float) -> dict:
    stages = rec.stage_totals()
    return {"arm": name, "wall_s": wall, "requested_evaluations": requested, "computed_evaluations": len(rec.results),
            "evaluations_per_hour": requested / wall * 3600, "teacher_s": teacher_s, **stages,
            "other_s": wall - sum(stages.values()), "unet_image_steps": rec.work()}


def run_benchmark(case: BenchCase, cache_dir=None, log=print, on_update=None) -> dict:
    """Run the benchmark of ``case``; returns the report (see :func:`format_report`).  ``on_update(report)`` is
    called after the naive/fast comparison and after each option (a long run leaves its figures as it goes)."""
    on_update = on_update or (lambda report: None)
    from bench.search import driver
    from bench.search.fitness import plan_extras
    from flexiffusion.search.evolution import evolve

    from bench.evaluation.evaluator import Evaluator

    preset, space, cost, budget, config, setting = _search_parts(case)
    extras = lambda p: plan_extras(p.candidate, p.plan, space, setting.scheduler)  # noqa: E731
    plan_cost = space.plan_cost(cost.step_macs)
    cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="search-bench-"))
    keep = space.branches if case.keep_features else None
    report = {"case": asdict(case), "setting_key": setting.key(), "n_images": setting.n_images,
              "space": space.to_dict(), "budget_avg_macs": budget, "config": config.to_dict()}

    log(f"naive: {case.preset}, {setting.n_images} images, {config.iterations} iterations, seed {config.seed}")
    t0 = time.perf_counter()
    naive_ev = Evaluator(setting, states=None, cache_dir=cache_dir / "naive").prepare()
    teacher_naive = time.perf_counter() - t0
    naive = _Recorder(naive_ev, False, extras)
    t0 = time.perf_counter()
    tick = lambda stats, *_: log(f"  iteration {stats['iteration']}: {stats['evaluations']} distinct evaluated, "  # noqa: E731
                                 f"best {stats['best_fitness']:.5g}")
    naive_result = evolve(space, plan_cost, naive, budget, config, dedup=False, progress=tick)
    naive_wall = time.perf_counter() - t0
    requested = len(naive.results)

    log("fast: dedup through the results store + prefix reuse")
    t0 = time.perf_counter()
    fast_ev = Evaluator(setting, cache_branches=keep, cache_dir=cache_dir / "fast").prepare()
    teacher_fast = time.perf_counter() - t0
    fast = _Recorder(fast_ev, True, extras)
    backend = driver.Backend(setting.key(), fast.rows, setting.to_dict(), {"model": setting.model})
    run = driver.SearchRun("search-bench", space, budget, config, cost.step_macs, backend, preset.name)
    t0 = time.perf_counter()
    fast_result, _, stored = driver.run_search(run, cache_dir / "results.sqlite", cache_dir / "out", tick)
    fast_wall = time.perf_counter() - t0

    naive_values = {d: e.fitness for d, e in naive_result.evaluated.items()}
    fast_values = {d: e.fitness for d, e in fast_result.evaluated.items()}
    by_plan_naive = {}
    for digest, r in naive.results:  # every naive evaluation of a plan, duplicates too
        by_plan_naive.setdefault(digest, set()).add(r["fitness"])
    fast_by_plan = {d: r["fitness"] for d, r in fast.results}
    identical = (naive_values == fast_values
                 and all(len(v) == 1 for v in by_plan_naive.values())
                 and all(fast_by_plan[d] in by_plan_naive[d] and len(by_plan_naive[d]) == 1 for d in fast_by_plan)
                 and [e.digest for e in naive_result.population] == [e.digest for e in fast_result.population])
    # exact split of the U-Net work: all requested from noise -> distinct from noise (dedup) -> fast (prefix reuse)
    from_noise = {d: r["unet_image_steps"] for d, r in naive.results}
    distinct_work = sum(from_noise.values())
    report.update(
        naive=_arm("naive", naive_wall, requested, naive, teacher_naive),
        fast=_arm("fast", fast_wall, requested, fast, teacher_fast),
        speedup=naive_wall / fast_wall,
        identical=identical, distinct_candidates=len(fast_values), duplicates=requested - len(by_plan_naive),
        best={"digest": fast_result.best.digest, "fitness": fast_result.best.fitness,
              "avg_macs": fast_result.best.avg_macs},
        work={"naive": naive.work(), "distinct_from_noise": distinct_work, "fast": fast.work(),
              "dedup_factor": naive.work() / distinct_work, "prefix_factor": distinct_work / max(1, fast.work()),
              "total_factor": naive.work() / max(1, fast.work())},
        state_store=dict(fast_ev.states.stats, bytes=fast_ev.states.bytes, entries=len(fast_ev.states)),
        stored_reads=stored.cached)
    if not identical:
        log("WARNING: fitness values differ between naive and fast")
    report["options"] = []
    log(format_report(report))
    on_update(report)

    proposals = [fast_result.evaluated[d] for d, _ in fast.results]
    eager = [r["fitness"] for _, r in fast.results]
    eager_s = sum(fast.stage_totals().values())
    for name in case.options:
        log(f"option {name}: the fast run's {len(proposals)} evaluations again")
        s = replace(setting, mode=OPTIONS[name])
        try:
            t0 = time.perf_counter()
            ev = Evaluator(s, cache_branches=keep, cache_dir=cache_dir / name).prepare()
            teacher_s = time.perf_counter() - t0
            rec = _Recorder(ev, True, extras)
            t0 = time.perf_counter()
            rec(proposals)
            wall = time.perf_counter() - t0
        except Exception as exc:  # an option that does not run here is reported, not hidden
            report["options"].append({"option": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            log(f"option {name} failed: {type(exc).__name__}: {exc}")
            continue
        values = [r["fitness"] for _, r in rec.results]
        report["options"].append({"option": name, "teacher_s": teacher_s, "evaluations_s": wall,
                                  "eager_evaluations_s": eager_s, "speedup": eager_s / wall,
                                  "kendall_tau": _kendall(eager, values),
                                  "max_abs_fitness_change": max(abs(a - b) for a, b in zip(eager, values)),
                                  **rec.stage_totals()})
        log(format_report(report).splitlines()[-1])
        on_update(report)
    return report


def _kendall(a, b) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic
    return float("nan") if tau is None or math.isnan(tau) else float(tau)


def format_report(r: dict) -> str:
    """The report as lines of text."""
    n, f = r["naive"], r["fast"]
    lines = [f"search benchmark {r['case']['preset']}: {r['n_images']} images per candidate, "
             f"{r['config']['iterations']} iterations, initial {r['config']['initial']}, n_m {r['config']['n_m']}, "
             f"n_p {r['config']['parents']}, n_c {r['config']['children']}, n_u {r['config']['population']}, "
             f"seed {r['config']['seed']}, threads {r['case']['threads']}, "
             f"eager fp32; {n['requested_evaluations']} evaluations requested by Algorithm 1, "
             f"{r['distinct_candidates']} distinct ({r['duplicates']} duplicates)"]
    for a in (n, f):
        lines.append(f"  {a['arm']:5s}: {a['wall_s']:8.1f} s, {a['evaluations_per_hour']:8.1f} evaluations/hour "
                     f"({a['computed_evaluations']} computed); sampling {a['sampling_s']:.1f} s, features "
                     f"{a['features_s']:.2f} s, distance {a['distance_s']:.3f} s, state I/O {a['io_s']:.3f} s, "
                     f"other (search, results store) {a['other_s']:.2f} s; teacher {a['teacher_s']:.1f} s (once)")
    w = r["work"]
    lines += [f"  speed-up fast vs naive: {r['speedup']:.2f}x (target >= 3x)",
              f"  U-Net image-steps: naive {w['naive']}, distinct candidates from noise {w['distinct_from_noise']}, "
              f"fast {w['fast']}: dedup saves {w['dedup_factor']:.2f}x, prefix reuse {w['prefix_factor']:.2f}x, "
              f"together {w['total_factor']:.2f}x",
              f"  every fitness value identical (naive vs fast, duplicates re-evaluated, final population): "
              f"{'yes' if r['identical'] else 'NO'}",
              f"  best: fitness {r['best']['fitness']:.6g}, avg MACs {r['best']['avg_macs'] / 1e9:.4g} G; state store "
              f"{r['state_store']['entries']} entries, {r['state_store']['bytes'] / 2**20:.1f} MiB, "
              f"{r['state_store']['hits']} hits / {r['state_store']['misses']} misses"]
    for o in r["options"]:
        if "error" in o:
            lines.append(f"  option {o['option']:13s}: failed ({o['error']})")
            continue
        lines.append(f"  option {o['option']:13s}: {o['speedup']:.2f}x on the evaluations ({o['evaluations_s']:.1f} s "
                     f"vs {o['eager_evaluations_s']:.1f} s eager fp32; teacher {o['teacher_s']:.1f} s), Kendall's tau "
                     f"{o['kendall_tau']:.4f}, max |fitness change| {o['max_abs_fitness_change']:.3g}")
    return "\n".join(lines)
