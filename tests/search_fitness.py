"""A cheap, deterministic fitness for driving the search in tests -- NOT rFID and never reported as a result.

``toy_fitness(plan)``: a weighted count of what the plan gives up against the teacher: an early step matters more
(weight decays along the grid), a null step loses all of a step, a partial step at branch b loses 1 / (1 + b).
Lower is better, so the search trades cost against it as it would against rFID.
"""
from flexiffusion.schedule import Plan


def toy_fitness(plan: Plan) -> float:
    n = len(plan)
    loss = 0.0
    for i, s in enumerate(plan.steps):
        w = 1.0 + 2.0 * (n - i) / n
        if s.kind == "null":
            loss += w
        elif s.kind == "partial":
            loss += w / (1.0 + s.branch)
    return round(loss / n, 12)


def toy_evaluate(plans):
    return [toy_fitness(p) for p in plans]
