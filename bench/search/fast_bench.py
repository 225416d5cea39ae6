"""The search-cost benchmark of the fast mode: the same seeded Algorithm 1 in three arms, on one machine, one run.

* ``naive``: Algorithm 1 as written, every child evaluated from noise on all images (no dedup, no prefix reuse),
  eager fp32: run for ``naive_iterations`` only (it is the slow arm); its rate gives the projection to full length
  (naive evaluations are independent draws of similar cost: wall per requested evaluation x requested evaluations).
* ``exact``: ``flexbench search`` (exact mode: dedup through the results store + prefix reuse; identical fitness to
  naive) for ``exact_iterations``.
* ``fast``: ``flexbench search --fast`` for ``iterations`` (adaptive image counts; its final Pareto set and best
  re-evaluated exactly).

The exact and fast arms run through :mod:`bench.search.session`, the code ``flexbench search`` runs, each with its
own store and cache (the teacher is sampled per arm, timed apart: ``teacher_s``).  Wall times are Algorithm 1's,
from its first evaluation to its last iteration, recorded after every iteration, so arms compare at equal
iteration counts: the speed-up at ``naive_iterations`` is measured, the full-length one projected from naive's rate.
Then each arm's best plan is evaluated exactly on ``final_images`` held-out images (seeds ``images ..
images + final_images - 1``), the figure the fast mode must not lose on.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .benchmark import _Recorder

B2 = {"initial": 50, "parents": 25, "children": 5, "population": 300, "iterations": 100}


@dataclass
class FastBenchCase:
    preset: str = "embedded-50"
    images: int = 250
    iterations: int = 100
    seeds: tuple[int, ...] = (0,)
    threads: int | None = 2
    batch_size: int = 250
    initial: int | None = B2["initial"]
    parents: int | None = B2["parents"]
    children: int | None = B2["children"]
    population: int | None = B2["population"]
    naive_iterations: int = 1
    naive_evaluations: int | None = None  # stop the naive arm after this many evaluations (its rate is what counts)
    exact_iterations: int | None = None   # None: iterations; 0: no exact arm
    final_images: int = 1000
    screen_stages: str | None = None
    screen_z: float | None = None


def _timed_search(req, log) -> dict:
    from .session import prepare, run_prepared

    p = prepare(req)
    log(p.describe())
    marks: list[float] = []
    t_ready: list[float] = []
    backend = p.run.backend
    inner = backend.prepare

    def prepared():
        got = inner()
        t_ready.append(time.perf_counter())
        return got

    backend.prepare = prepared
    t0 = time.perf_counter()

    def tick(stats, fitness):
        marks.append(time.perf_counter())
        log(f"  {req.name} iteration {stats['iteration']}: {stats['evaluations']} distinct, best "
            f"{stats['best_fitness']:.5g}, {marks[-1] - t_ready[0]:.0f} s")

    result, summary, fitness = run_prepared(p, tick)
    start = t_ready[0] if t_ready else t0
    return {"prepared": p, "result": result, "summary": summary, "teacher_s": start - t0,
            "iteration_s": [m - start for m in marks], "new": fitness.done}


def _work(store_path, key: str, digests, n_images: int) -> dict:
    """U-Net image-steps and stage counts of the stored evaluations under ``key``."""
    from bench.store import ResultStore

    from .driver import eval_key

    work, used, stopped, from_noise, unscreened = 0, [], 0, 0, 0
    with ResultStore(store_path) as store:
        for d in digests:
            rows = {r["metric"]: r["value"] for r in store.get(eval_key(key, d)) or []}
            work += int(rows.get("unet_image_steps") or 0)
            n_used = int(rows.get("n_images_used") or 0)
            used.append(n_used)
            stopped += int(rows.get("screened") or 0)
            nfe = int(rows.get("nfe") or 0)
            from_noise += nfe * n_images          # this candidate from noise on all images (exact counts)
            unscreened += nfe * n_used            # ... from noise on the images it ran
    return {"unet_image_steps": work, "stopped": stopped, "n_images_used": used,
            "distinct_from_noise": from_noise, "from_noise_images_used": unscreened}


class _Enough(Exception):
    pass


class _Capped(_Recorder):
    """The naive arm's fitness: every proposal from noise, stopping the run after ``cap`` evaluations."""

    def __init__(self, evaluator, extras, cap):
        super().__init__(evaluator, False, extras)
        self.cap = cap

    def rows(self, proposals, space=None):
        out = []
        for p in proposals:
            if self.cap is not None and len(self.results) >= self.cap:
                raise _Enough
            out += super().rows([p], space)
        return out


def run_fast_bench(case: FastBenchCase, work_dir, log=print, on_update=None) -> dict:
    from flexiffusion.search.evolution import evolve

    from bench.evaluation.evaluator import Evaluator

    from .fitness import plan_extras
    from .session import SearchRequest

    on_update = on_update or (lambda report: None)
    work_dir = Path(work_dir)
    report = {"case": asdict(case), "seeds": []}
    for seed in case.seeds:
        common = dict(preset=case.preset, seed=seed, images=case.images, initial=case.initial, parents=case.parents,
                      children=case.children, population=case.population, threads=case.threads,
                      batch_size=case.batch_size)
        row = {"seed": seed}
        # ---- fast -------------------------------------------------------------------------------------------
        fast_req = SearchRequest(**common, iterations=case.iterations, fast=True, name=f"fast-s{seed}",
                                 store=str(work_dir / f"fast-s{seed}.sqlite"), out=str(work_dir / f"fast-s{seed}"),
                                 cache_dir=str(work_dir / f"cache-fast-s{seed}"), screen_stages=case.screen_stages,
                                 screen_z=case.screen_z)
        fast = _timed_search(fast_req, log)
        fsum = fast["summary"]["fast"]
        p = fast["prepared"]
        setting, space = p.setting, p.run.space
        from bench.store import ResultStore

        from .driver import eval_key

        prefix = eval_key(fsum["evaluation"], "x")[:-1]
        with ResultStore(fast_req.store) as store:
            evaluated = [k[len(prefix):] for k in store.keys(prefix)]
        fw = _work(fast_req.store, fsum["evaluation"], evaluated, case.images)
        history = fast["summary"]["history"]
        requested = history[0]["new_evaluations"] + sum(h["children"] for h in history[1:])
        row["fast"] = {"wall_s": fast["iteration_s"][-1], "iteration_s": fast["iteration_s"],
                       "teacher_s": fast["teacher_s"], "requested_evaluations": requested,
                       "distinct_evaluations": fsum["evaluated"], "stopped": fsum["screened"],
                       "unet_image_steps": fw["unet_image_steps"],
                       # the U-Net work: distinct candidates from noise on all images -> on the images they ran
                       # (screening) -> what ran (prefix reuse); requested / distinct is dedup's share
                       "work_split": {"distinct_from_noise": fw["distinct_from_noise"],
                                      "screening_factor": fw["distinct_from_noise"] / max(1, fw["from_noise_images_used"]),
                                      "prefix_factor": fw["from_noise_images_used"] / max(1, fw["unet_image_steps"]),
                                      "dedup_factor": requested / max(1, fsum["evaluated"])},
                       "stage_counts": {str(k): fw["n_images_used"].count(k) for k in sorted(set(fw["n_images_used"]))},
                       "best_fast_fitness": fsum["best"]["fitness"], "best_digest": fast["result"].best.digest,
                       "best_exact_fitness": fast["result"].best.fitness,
                       "evaluations_per_hour": requested / max(fast["iteration_s"][-1], 1e-9) * 3600}
        on_update(report)
        # ---- naive (short) ------------------------------------------------------------------------------------
        k = min(case.naive_iterations, case.iterations)
        config = replace(p.run.config, iterations=k)
        t0 = time.perf_counter()
        naive_ev = Evaluator(setting, states=None, cache_dir=work_dir / f"cache-naive-s{seed}").prepare()
        teacher_naive = time.perf_counter() - t0
        extras = lambda q: plan_extras(q.candidate, q.plan, space, setting.scheduler)  # noqa: E731
        rec = _Capped(naive_ev, extras, case.naive_evaluations)
        marks = []
        t0 = time.perf_counter()
        try:
            evolve(space, space.plan_cost(p.cost.step_macs), rec, p.run.budget, config, dedup=False,
                   progress=lambda stats: (marks.append(time.perf_counter() - t0),
                                           log(f"  naive-s{seed} iteration {stats['iteration']}: {marks[-1]:.0f} s")))
        except _Enough:
            pass
        naive_wall = time.perf_counter() - t0
        naive_requested = len(rec.results)
        row["naive"] = {"wall_s": naive_wall, "iteration_s": marks, "teacher_s": teacher_naive,
                        "requested_evaluations": naive_requested, "unet_image_steps": rec.work(),
                        "s_per_evaluation": naive_wall / naive_requested,
                        "complete_iterations": len(marks) - 1}
        if marks and len(marks) - 1 == k:
            row["speedup_at_naive_iterations"] = marks[-1] / fast["iteration_s"][k]
        row["naive_projected_s"] = row["naive"]["s_per_evaluation"] * requested
        row["speedup_projected"] = row["naive_projected_s"] / row["fast"]["wall_s"]
        on_update(report)
        # ---- exact ---------------------------------------------------------------------------------------------
        bests = {"fast": fast["result"].best}
        exact_its = case.iterations if case.exact_iterations is None else case.exact_iterations
        if exact_its:
            exact_req = SearchRequest(**common, iterations=exact_its, name=f"exact-s{seed}",
                                      store=str(work_dir / f"exact-s{seed}.sqlite"), out=str(work_dir / f"exact-s{seed}"),
                                      cache_dir=str(work_dir / f"cache-exact-s{seed}"))
            exact = _timed_search(exact_req, log)
            eh = exact["summary"]["history"]
            ereq = eh[0]["new_evaluations"] + sum(h["children"] for h in eh[1:])
            row["exact"] = {"wall_s": exact["iteration_s"][-1], "iteration_s": exact["iteration_s"],
                            "teacher_s": exact["teacher_s"], "requested_evaluations": ereq,
                            "distinct_evaluations": exact["summary"]["evaluated"],
                            "best_fitness": exact["result"].best.fitness, "best_digest": exact["result"].best.digest,
                            "evaluations_per_hour": ereq / max(exact["iteration_s"][-1], 1e-9) * 3600}
            row["fast_vs_exact_at_exact_iterations"] = (exact["iteration_s"][-1]
                                                        / fast["iteration_s"][min(exact_its, case.iterations)])
            bests["exact"] = exact["result"].best
        # ---- the bests, exactly, on held-out images ----------------------------------------------------------------
        if case.final_images:
            final = Evaluator(replace(setting, seeds=tuple(range(case.images, case.images + case.final_images)),
                                      batch_size=min(case.batch_size, case.final_images)),
                              states=None, cache_dir=work_dir / "cache-final").prepare()
            for arm, e in bests.items():
                r = final.evaluate([e.plan], [plan_extras(e.candidate, e.plan, space, setting.scheduler)])[0]
                row.setdefault("final", {})[arm] = {"digest": e.digest, "avg_macs": e.avg_macs,
                                                    f"rfid_{case.final_images}": r["fitness"]}
        report["seeds"].append(row)
        on_update(report)
    return report


def format_fast_report(r: dict) -> str:
    c = r["case"]
    lines = [f"search cost {c['preset']}: {c['images']} images per candidate, {c['iterations']} iterations, initial "
             f"{c['initial']}, n_p {c['parents']}, n_c {c['children']}, n_u {c['population']}, threads {c['threads']}"]
    for s in r["seeds"]:
        f, n = s["fast"], s.get("naive")
        lines.append(f"seed {s['seed']}: fast {f['wall_s']:.0f} s ({f['wall_s'] / 60:.1f} min) for "
                     f"{f['requested_evaluations']} requested evaluations, {f['distinct_evaluations']} distinct, "
                     f"{f['stopped']} stopped early (images used: {f['stage_counts']}); "
                     f"{f['unet_image_steps']} U-Net image-steps; {f['evaluations_per_hour']:.0f} evaluations/hour")
        w = f["work_split"]
        lines.append(f"  U-Net work saved: dedup {w['dedup_factor']:.2f}x (evaluations), screening "
                     f"{w['screening_factor']:.2f}x, prefix reuse {w['prefix_factor']:.2f}x (image-steps)")
        if n:
            same = (f"fast is {s['speedup_at_naive_iterations']:.2f}x faster over the same "
                    f"{n['complete_iterations']} iterations; " if "speedup_at_naive_iterations" in s else "")
            lines.append(f"  naive: {n['wall_s']:.0f} s for {n['requested_evaluations']} evaluations "
                         f"({n['s_per_evaluation']:.1f} s each): {same}naive at full length projected from its rate "
                         f"{s['naive_projected_s'] / 60:.0f} min -> fast {s['speedup_projected']:.2f}x faster")
        if "exact" in s:
            e = s["exact"]
            lines.append(f"  exact (reuse): {e['wall_s']:.0f} s for {e['requested_evaluations']} evaluations "
                         f"({len(e['iteration_s']) - 1} iterations); fast {s['fast_vs_exact_at_exact_iterations']:.2f}x "
                         "faster over them")
        for arm, v in (s.get("final") or {}).items():
            key = [k for k in v if k.startswith("rfid_")][0]
            lines.append(f"  best of {arm}: exact {key.replace('_', ' at ')} images = {v[key]:.4g} "
                         f"(avg MACs {v['avg_macs'] / 1e9:.4g} G)")
    return "\n".join(lines)
