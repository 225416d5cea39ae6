"""Methods whose plan comes from a search, wired into the registry's :class:`baselines.registry.Context`
(:func:`method_context`): Flexiffusion's best plan of a stored search and AutoDiffusion's search fitness
(:func:`bench.search.autodiffusion.search_fitness`).

A stored search is the ``flexiffusion-search/<key>`` result of experiment "search" that ``flexbench search``
writes (its ``best_fitness`` row holds the best plan and ``extra.search`` the search's name).  A row or command
takes the search it names, else its preset's newest (named ``<preset>-<layout>-s<seed>`` by default).  A search
named by a command that is not stored is bad input (:func:`require_search`: one line naming it and the stored
ones); a spec row's search that is not stored yet is a cell saying which command stores it
(:class:`baselines.registry.MissingInput`).
"""
from __future__ import annotations

import json

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan


def _newest(store) -> dict[str, dict]:
    """Search name -> its newest stored ``best_fitness`` row."""
    if store is None:
        return {}
    out: dict[str, dict] = {}
    for _, r in store.frame(experiment="search", metric="best_fitness").iterrows():
        name = (r["extra"] or {}).get("search", "")
        if name and (name not in out or r["created"] >= out[name]["created"]):
            out[name] = r
    return out


def stored_searches(store) -> list[str]:
    """The names of the searches stored in ``store``, sorted."""
    return sorted(_newest(store))


def _best(store, preset: str, name: str | None):
    """The newest stored best-plan row of the search ``name`` (else of ``preset``'s searches); None if none."""
    best = None
    for found, r in _newest(store).items():
        # a search's preset as registered with it (its search/<name> setting), else the default name's prefix
        stored_preset = _preset_of(store, found)
        mine = found == name if name else (stored_preset == preset if stored_preset else found.startswith(f"{preset}-"))
        if mine and (best is None or r["created"] >= best["created"]):
            best = r
    return best


def _plan_dict(row) -> dict:
    return json.loads(row["plan"]) if isinstance(row["plan"], str) else row["plan"]


def searched_plan(store, preset: str, name: str | None = None) -> tuple[Plan, str] | None:
    """(best plan, search name) of the newest stored search of ``preset`` (only the search called ``name`` when
    given); None when there is none."""
    best = _best(store, preset, name)
    if best is None:
        return None
    return Plan.from_dict(_plan_dict(best)), best["extra"]["search"]


def _store_name(store) -> str:
    return str(getattr(store, "path", "")) or "the results store"


def require_search(store, name: str) -> None:
    """Bad input unless a search called ``name`` is stored: one line naming it and the stored ones."""
    if _best(store, "", name) is None:
        names = stored_searches(store)
        raise UserError(f"no stored search {name!r} in {_store_name(store) if store is not None else 'the store'}: "
                        f"the stored searches are {', '.join(names) if names else '(none)'}; run flexbench search "
                        f"--name {name} --store FILE first, or name one of them")


def search_command(preset: str, name: str = "", args: str = "") -> str:
    """The command that stores the search a row takes."""
    return (f"flexbench search --preset {preset or 'PRESET'} --seed 0 " + (f"{args} " if args else "")
            + (f"--name {name} " if name else "") + "--store FILE, then this command again")


def searched_scheduler(preset_name: str) -> str:
    """The sampler a searched plan ran on in its search: the preset's teacher sampler (DDIM, PLMS)."""
    from bench.search.presets import get_preset

    preset = get_preset(preset_name)
    if preset.solver != "ddim":
        raise UserError(f"a searched row of preset {preset_name} runs on per-segment DPM-Solver orders, which the "
                        "experiment runner does not apply yet: run its best.json with flexbench sample --plan")
    return preset.scheduler


def _preset_of(store, name: str) -> str:
    """The preset a stored search ran with (its ``search/<name>`` setting), "" when the store does not say."""
    try:
        meta = store.get_meta(f"search/{name}")
        return (json.loads(meta).get("setting") or {}).get("preset", "") if meta else ""
    except (ValueError, AttributeError):
        return ""


def stored_search(store):
    """The Context's ``stored_search(preset, name, search_args) -> (step tokens, scheduler, search name)`` over
    ``store`` (None: nothing stored); :class:`baselines.registry.MissingInput` naming the search, the stored ones and
    the command that stores it when there is no such search."""
    from baselines.registry import MissingInput

    def resolve(preset: str, name: str = "", args: str = ""):
        if preset:
            from bench.search.presets import get_preset

            get_preset(preset)   # an unknown preset is bad input
        best = _best(store, preset, name or None)
        if best is None:
            names = stored_searches(store)
            what = f"search {name!r}" if name else f"search of preset {preset}"
            raise MissingInput(f"no stored {what} in {_store_name(store) if store is not None else 'the store'}: "
                               f"the stored searches are {', '.join(names) if names else '(none)'}",
                               search_command(preset, name, args))
        found = best["extra"]["search"]
        plan = _plan_dict(best)
        preset = preset or _preset_of(store, found)
        if plan.get("orders") is not None:
            raise UserError(f"search {found} runs on per-segment DPM-Solver orders, which the method runner does not "
                            "apply yet: run its best.json with flexbench sample --plan")
        stored = best["scheduler"] if isinstance(best["scheduler"], str) else ""
        scheduler = searched_scheduler(preset) if preset else (plan.get("scheduler") or stored or "ddim")
        return tuple(Plan.from_dict(plan).tokens()), scheduler, found
    return resolve


def method_context(store=None, cache_dir=None, progress: bool = True):
    """The registry :class:`~baselines.registry.Context` the harness builds runs with: ``store``, the stored
    Flexiffusion searches in it and AutoDiffusion's stored search fitness."""
    from baselines.registry import Context
    from bench.search.autodiffusion import search_fitness

    return Context(store, cache_dir, progress, stored_search=stored_search(store),
                   search_fitness=search_fitness(cache_dir))
