"""A Flexiffusion row: the best plan of a finished search of the row's preset stored in the results store
(``flexiffusion-search/<key>`` rows of experiment "search", written by ``flexbench search``; the search named
``<preset>-<layout>-s<seed>``, the newest if several)."""
from __future__ import annotations

import json

from flexiffusion.schedule import Plan


def searched_plan(store, preset: str, name: str | None = None) -> tuple[Plan, str] | None:
    """(best plan, search name) of the newest stored search of ``preset`` (only the search called ``name`` when
    given); None when there is none."""
    if store is None:
        return None
    frame = store.frame(experiment="search", metric="best_fitness")
    best = None
    for _, r in frame.iterrows():
        found = (r["extra"] or {}).get("search", "")
        mine = found == name if name else found.startswith(f"{preset}-")
        if mine and (best is None or r["created"] >= best["created"]):
            best = r
    if best is None:
        return None
    plan = json.loads(best["plan"]) if isinstance(best["plan"], str) else best["plan"]
    return Plan.from_dict(plan), best["extra"]["search"]
