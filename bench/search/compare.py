"""The issue's check of a finished search: its best candidate against DeepCache's uniform schedules
(:func:`baselines.deepcache.uniform_plan`) at equal or lower avg MACs, under the search's own evaluation setting
(same model, teacher, seeds, images and fitness), every value stored in the results store.  For context also the
two dearest step-skipping plans under the same MACs (a full step every k steps, null steps between).
"""
from __future__ import annotations

import json
from pathlib import Path

from baselines.deepcache import uniform_plan
from flexiffusion.errors import UserError

INTERVALS = tuple(range(2, 11)) + (15, 20)   # DeepCache-A..D use 2, 5, 10, 20
EVAL_PREFIX = "deepcache-eval"


def uniform_under(budget: float, step_macs, steps: int, branches, intervals=INTERVALS) -> list:
    """DeepCache uniform plans (interval N, branch b) whose avg MACs are <= ``budget``, dearest first."""
    full = step_macs[-1]
    out = []
    for n in intervals:
        for b in branches:
            plan = uniform_plan(steps, n, b)
            avg = sum(step_macs[s.branch] if s.kind == "partial" else full for s in plan.steps) / steps
            if avg <= budget:
                out.append((avg, plan))
    return [p for _, p in sorted(out, key=lambda x: (-x[0], x[1].name))]


def skip_under(budget: float, full_macs: float, steps: int, ks=range(2, 11)) -> list:
    """Step-skipping references: a full step every k steps, null steps between (with DDIM at eta 0: DDIM on
    ceil(T / k) of the teacher's timesteps), avg MACs <= ``budget``, dearest first."""
    from flexiffusion.schedule import Plan, Step

    out = []
    for k in ks:
        plan = Plan(tuple(Step.full() if i % k == 0 else Step.null() for i in range(steps)), f"skip-every-{k}")
        if plan.nfe * full_macs / steps <= budget:
            out.append(plan)
    return out


def setting_from(summary_setting: dict):
    """The :class:`EvaluationSetting` a search ran with, from its stored setting."""
    from bench.evaluation.setting import EvaluationSetting

    d = {k: v for k, v in summary_setting["evaluation_setting"].items() if k not in ("profile", "screen")}
    return EvaluationSetting(**{**d, "seeds": tuple(d["seeds"])})   # a fast search: its exact setting


def evaluate_stored(setting, items, step_macs, grid: int, store, *, search: str = "", cache_dir=None) -> list[dict]:
    """``items`` = [(method, plan)]: each evaluated under ``setting`` once (read back from the store after that);
    one row dict per item (metric values, ``macs_pct``)."""
    from bench.evaluation.evaluator import Evaluator
    from bench.evaluation.stored import metric_rows
    from bench.results import result_key

    evaluator: list = []   # built on the first plan not in the store
    rows = []
    for method, plan in items:
        def compute(method=method, plan=plan) -> list[dict]:
            if not evaluator:
                evaluator.append(Evaluator(setting, cache_dir=cache_dir).prepare())
            result = evaluator[0].evaluate([plan])[0]
            avg = sum(step_macs[s.branch] if s.kind == "partial" else (0 if s.kind == "null" else step_macs[-1])
                      for s in plan.steps) / grid
            values = {"avg_macs": avg, "nfe": plan.nfe, "fitness": result["fitness"],
                      **{k: result[k] for k in ("rfid", "fid", "mse") if k in result}}
            return metric_rows({"experiment": "search-compare", "method": method, "plan_digest": plan.digest(),
                                "plan": plan.to_dict(), "grid": len(plan), "model": setting.model,
                                "scheduler": setting.scheduler, "n_images": setting.n_images,
                                "extra": {"evaluation": setting.key(), "search": search}}, values)

        stored, _ = store.get_or_put(result_key(EVAL_PREFIX, setting.key(), plan.digest()), compute)
        row = {"method": method, "plan": plan.name, "digest": plan.digest()}
        row.update(stored.values())
        row["macs_pct"] = 100 * row["avg_macs"] / step_macs[-1]
        rows.append(row)
    return rows


def compare(summary_path, store_path, *, branches=None, limit: int = 6, cache_dir=None) -> list[dict]:
    """Rows (method, plan, avg MACs, NFE, fitness metrics) for the search's best and the ``limit`` dearest DeepCache
    uniform plans at or below its avg MACs (branches: the search space's unless given)."""
    from bench.store import ResultStore
    from flexiffusion.schedule import Plan

    path = Path(summary_path)
    if not path.is_file():
        raise UserError(f"search summary {path} not found: pass the summary.json a finished search wrote")
    summary = json.loads(path.read_text())
    setting = setting_from(summary["setting"])
    space = summary["setting"]["space"]
    if space["layout"] != "tile" or space["solver"] != "ddim":
        raise UserError("the DeepCache comparison needs a tile-layout DDIM search (plans on the teacher's grid)")
    step_macs = summary["setting"]["step_macs"]
    best = summary["best"]
    plans = uniform_under(best["avg_macs"], step_macs, space["grid"], branches or space["branches"])[:limit]
    items = [("flexiffusion", Plan.from_dict(best))] + [("deepcache", p) for p in plans]
    items += [("ddim-skip", p) for p in skip_under(best["avg_macs"], step_macs[-1], space["grid"])[:2]]
    with ResultStore(store_path) as store:
        return evaluate_stored(setting, items, step_macs, space["grid"], store, search=summary["name"],
                               cache_dir=cache_dir)
