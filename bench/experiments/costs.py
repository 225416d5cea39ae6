"""Cost cells that do not depend on weights: NFE, avg MACs and speed-up (by MACs) of a plan on a cost preset's real
architecture with random weights (bench.cost), stored as tidy rows (weights "random") under a key of the preset,
plan and teacher steps; and Fig. B.1's fraction of a full step per branch.  Keys: ``cost/<preset>/<hash>`` and
``figB1/<preset>/<hash>`` (:func:`bench.results.result_key`), each written once (``ResultStore.get_or_put``)."""
from __future__ import annotations

from bench.cache import stable_hash
from bench.results import result_key

G = 1e9


def plan_cost_rows(store, preset: str, plan, scheduler: str, label: str, teacher_steps: int, model: str) -> str:
    """Store (once) the plan's cost rows on ``preset``; returns their key."""
    from bench.cost.macs import cache_key
    from bench.cost.schedule_cost import CostModel

    key = result_key("cost", preset, stable_hash({"preset": cache_key(preset), "plan": plan.digest(),
                                                  "teacher_steps": teacher_steps, "label": label}))

    def rows() -> list[dict]:
        from flexiffusion.schedule import avg_macs

        values = {"nfe": plan.nfe, "grid": len(plan)}
        for conv in ("paper", "complete"):
            cost = CostModel.for_preset(preset, convention=conv)
            total = cost.total_macs(plan)
            values[f"avg_macs_{conv}_g"] = avg_macs(total, teacher_steps) / G
            values[f"speedup_{conv}"] = cost.full_macs * teacher_steps / total
        common = {"experiment": "costs", "method": label, "model": model, "weights": "random", "plan_digest":
                  plan.digest(), "plan": plan.to_dict(), "scheduler": scheduler, "grid": len(plan), "n_images": 0,
                  "extra": {"preset": preset, "teacher_steps": teacher_steps}}
        return [{**common, "metric": m, "value": float(v)} for m, v in values.items()]

    store.get_or_put(key, rows)
    return key


def branch_rows(store, preset: str) -> tuple[str, bool]:
    """Fig. B.1 rows of one preset: MACs of partial(b) / full, both conventions; returns (key, reused)."""
    from bench.cost.macs import cache_key, preset_table

    key = result_key("figB1", preset, stable_hash(cache_key(preset)))

    def rows() -> list[dict]:
        table = preset_table(preset)
        return [{"experiment": "figB1", "method": f"{preset} b{b}", "model": preset, "weights": "random",
                 "metric": f"fraction_{conv}", "value": float(frac), "n_images": 0,
                 "extra": {"branch": b, "preset": preset, "convention": conv,
                           "full_g": table.unet_macs("full", None, conv) / G}}
                for conv in ("paper", "complete") for b, frac in enumerate(table.fractions(conv), start=1)]

    _, reused = store.get_or_put(key, rows)
    return key, reused
