"""Run an experiment's missing cells into the results store (reusing every result already there by key).

Per row: its cost on the model's real architecture with random weights (always, bench.experiments.costs); its
quality through the common row harness (bench.rows.measure, with a bootstrap spread over images) when the model's
weights are here; Flexiffusion rows point at the search command that fills them.  Then the ``compare`` pairs get a
paired bootstrap of their FID difference.  Everything is validated before the store is opened.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flexiffusion.errors import UserError

from .cells import Cell, Comparison
from .models import fill_command, get_model
from .plans import PLAN_METHODS, plan_for
from .spec import ExperimentSpec


@dataclass
class Options:
    model: str | None = None
    weights: str | None = None
    images: int | None = None
    bootstrap: int = 200
    dry_run: bool = False
    cache_dir: str | None = None
    progress: bool = True
    device: str = "cpu"
    searches: dict = field(default_factory=dict)   # preset -> the search name its rows take (default: the newest)
    runs: dict | None = None   # when a dict: filled with label -> bench.rows.Run of each measured row
    bundle: object = None      # the model, already loaded by the caller (the runs' hooks act on its U-Net)


def resolve_model(spec: ExperimentSpec, model: str | None) -> str:
    model = model or spec.default_model
    get_model(model)
    if model not in spec.models:
        raise UserError(f"experiment {spec.name} is for models {', '.join(spec.models)}, not {model!r}")
    return model


def _experiment(row):
    from baselines.registry import Experiment

    return Experiment.from_dict({"method": row.method, "config": row.config, "tome": row.tome, "label": row.label})


def prepared_rows(spec: ExperimentSpec, model: str) -> list[tuple]:
    """``(row, experiment or None, plan or None, scheduler)`` per row; every config checked (UserError)."""
    from dataclasses import replace

    out = []
    for row in spec.rows:
        if row.search:
            from bench.search.presets import get_preset

            preset = row.search.get(model) if isinstance(row.search, dict) else row.search
            if preset is None:
                continue
            get_preset(preset)
            args = row.search_args.get(model, "") if isinstance(row.search_args, dict) else row.search_args
            out.append((replace(row, search=preset, search_args=args), None, None, ""))
        elif row.method in PLAN_METHODS:
            out.append((row, None, plan_for(row.method, row.config, row.label), "ddim"))
        else:
            exp = _experiment(row)
            plan, sched = (None, "ddim-subset") if exp.method == "autodiffusion" else exp.spec.plan(exp._config())
            out.append((row, exp, plan, sched))
    return out


def _setting(spec, options, bundle):
    from bench.rows import RowSetting

    n = options.images or spec.images
    from bench.search.setup import text_condition

    # prompted rows sample with the model's default guidance (SD: 7.5), unguided otherwise: as searches do
    prompts, guidance = text_condition(bundle, n)
    return RowSetting(n_images=n, teacher_steps=spec.teacher_steps, batch_size=min(n, 250), prompts=prompts,
                      guidance_scale=guidance)


def _quality(spec, row, exp, plan, sched, bundle, store, options):
    from baselines.registry import Context, plan_run, Experiment, StepsConfig
    from bench.rows import measure, row_key

    if exp is None:  # a pattern / random / searched plan on the DDIM grid
        exp = Experiment("ddim", StepsConfig(len(plan)), label=row.label)
        run = plan_run(exp, bundle, plan, sched)
        run.method, run.config = row.method, {"plan-method": row.method, **row.config}
    else:
        run = exp.build(bundle, Context(store, options.cache_dir, options.progress))
    setting = _setting(spec, options, bundle)
    _, reused = measure(bundle, run, setting, store, options.cache_dir, options.progress, bootstrap=options.bootstrap)
    if options.runs is not None:
        options.runs[row.label] = run
    return row_key(bundle, run, setting, options.bootstrap), reused, run.plan


def fill(spec: ExperimentSpec, store, options: Options) -> tuple[list[Cell], list[Comparison]]:
    """Fill the missing cells of ``spec`` on ``options.model``; ``store`` may be None only with dry_run."""
    model = resolve_model(spec, options.model)
    info = get_model(model)
    prepared = prepared_rows(spec, model)
    have_weights = info.shipped or options.weights is not None
    command = fill_command(spec.name, model)
    cells: list[Cell] = []
    if spec.name == "figB1":
        if options.dry_run:
            return [Cell(m, "planned") for m in spec.models], []
        done = [(m, *_branch_key(store, m)) for m in ([options.model] if options.model else spec.models)]
        return [Cell(m, "reused" if reused else "measured", [key]) for m, key, reused in done], []
    if spec.name == "fig4":
        return [_similarity_cell(spec, model, store, options, have_weights, command)], []
    if spec.filled_by and not spec.rows:
        return _elsewhere(spec, store), []
    from dataclasses import replace

    bundle = None
    for row, exp, plan, sched in prepared:
        if row.search:
            from .searched import searched_plan

            found = searched_plan(store, row.search, options.searches.get(row.search) or row.search_name or None)
            if found is None:
                named = (f"{row.search_args} " if row.search_args else "") + (
                    f"--name {row.search_name} " if row.search_name else "")
                cells.append(Cell(row.label, "search", command=f"flexbench search --preset {row.search} --seed 0 "
                                  f"{named}--store FILE, then this command again", note=row.note))
                continue
            plan, search_name = found
            row = replace(row, method="searched", config={"search": search_name, "preset": row.search},
                          note=row.note or f"best plan of search {search_name}")
            sched = _searched_scheduler(row.search)
        keys = []
        if options.dry_run:
            cells.append(Cell(row.label, "planned" if have_weights else "cost only", [], "" if have_weights
                              else command, row.note, plan.tokens() if plan is not None else None))
            continue
        if plan is not None:
            keys.append(_cost_key(store, info.cost_preset, plan, sched, row.label, spec.teacher_steps, model))
        if not have_weights:
            cells.append(Cell(row.label, "cost only", keys, command, row.note, plan.tokens() if plan else None))
            continue
        if bundle is None and options.bundle is not None:
            bundle = options.bundle
        if bundle is None:
            from bench.models import load_model

            bundle = load_model(info.loader, options.weights, device=options.device)
        key, reused, run_plan = _quality(spec, row, exp, plan, sched, bundle, store, options)
        # the measured row last (compare pairs read it there; the report lets it override the architecture's cost
        # cell: its MACs are counted on the model as it ran, ToMe applied, its real context length)
        cells.append(Cell(row.label, "reused" if reused else "measured", keys + [key], "", row.note,
                          run_plan.tokens()))
    return cells, _compare(spec, cells, store, options)


def _searched_scheduler(preset_name: str) -> str:
    """The sampler a searched plan ran on in its search: the preset's teacher sampler (DDIM, PLMS)."""
    from bench.search.presets import get_preset

    preset = get_preset(preset_name)
    if preset.solver != "ddim":
        raise UserError(f"a searched row of preset {preset_name} runs on per-segment DPM-Solver orders, which the "
                        "experiment runner does not apply yet: run its best.json with flexbench sample --plan")
    return preset.scheduler


def _cost_key(store, preset, plan, sched, label, teacher_steps, model):
    from .costs import plan_cost_rows

    return plan_cost_rows(store, preset, plan, sched, label, teacher_steps, model)


def _branch_key(store, model):
    from .costs import branch_rows

    return branch_rows(store, get_model(model).cost_preset)


def _elsewhere(spec, store) -> list[Cell]:
    frame = store.frame(experiment=spec.name) if store is not None else None
    if frame is None or frame.empty:
        return [Cell("(no rows yet)", "elsewhere", command=spec.filled_by)]
    return [Cell(label, "reused", sorted(set(g["key"])), spec.filled_by) for label, g in frame.groupby("method",
                                                                                                     sort=False)]


def _similarity_cell(spec, model, store, options, have_weights, command) -> Cell:
    from .figure4 import similarity_key

    if options.dry_run or not have_weights:
        return Cell(model, "planned" if have_weights else "needs weights", command="" if have_weights else command)
    key, reused = similarity_key(spec, model, store, options)
    return Cell(model, "reused" if reused else "measured", [key])


def _compare(spec, cells, store, options) -> list[Comparison]:
    from .compare import compare_pair

    by_label = {c.label: c for c in cells}
    return [compare_pair(a, b, by_label, store, options) for a, b in spec.compare]
