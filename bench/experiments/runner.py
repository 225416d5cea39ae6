"""Run an experiment's missing cells into the results store (reusing every result already there by key).

Every row is a registry method (baselines.registry; a ``search`` row is the ``flexiffusion`` method: the best plan
of a stored search), resolved against the store through the harness's context (bench.experiments.searched).  Per
row: its cost on the model's real architecture with random weights (always, bench.experiments.costs); its quality
through the common row harness (bench.rows.measure, with a bootstrap spread over images) when the model's weights
are here; a row whose search is not stored yet points at the search command that fills it.  Then the ``compare``
pairs get a paired bootstrap of their FID difference.  Everything is validated before the store is opened.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flexiffusion.errors import UserError

from .cells import Cell, Comparison
from .models import command_for_model, fill_command, get_model
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
    runs: dict | None = None   # when a dict: filled with label -> baselines.run.Run of each measured row
    bundle: object = None      # the model, already loaded by the caller (the runs' hooks act on its U-Net)
    overrides: dict = field(default_factory=dict)  # method -> config fields merged into its rows' configs (e.g. a
                                                   # smaller AutoDiffusion search: part of the rows' keys)
    inputs: object = None      # bench.evaluation.inputs.ModelInputs, checked by the caller (None: the model's
                               # defaults, checked here before anything samples)


def merged(config: dict, over: dict) -> dict:
    """``config`` with ``over`` merged in (nested tables merged field by field)."""
    out = dict(config)
    for k, v in over.items():
        out[k] = merged(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def resolve_model(spec: ExperimentSpec, model: str | None) -> str:
    model = model or spec.default_model
    get_model(model)
    if model not in spec.models:
        raise UserError(f"experiment {spec.name} is for models {', '.join(spec.models)}, not {model!r}")
    return model


def _experiment(row, searches: dict, overrides: dict | None = None):
    """The registry experiment of a row (a ``search`` row: the ``flexiffusion`` method of its preset, taking the
    search ``searches`` names for the preset, else the row's ``search_name``, else the preset's newest)."""
    from baselines.registry import Experiment

    if row.search:
        config = {"preset": row.search, "search": searches.get(row.search) or row.search_name,
                  "search_args": row.search_args}
        return Experiment.from_dict({"method": "flexiffusion", "config": config, "label": row.label})
    config = merged(row.config, (overrides or {}).get(row.method, {}))
    return Experiment.from_dict({"method": row.method, "config": config, "tome": row.tome, "label": row.label})


def prepared_rows(spec: ExperimentSpec, model: str, searches: dict | None = None,
                  overrides: dict | None = None) -> list[tuple]:
    """``(row, experiment)`` per row of ``spec`` on ``model`` (a ``search`` row's preset and search arguments those
    of the model; rows without a preset for the model drop out); every config and its plan checked (UserError).
    ``searches``: preset -> the stored search its rows take; ``overrides``: method -> config fields merged in."""
    from dataclasses import replace

    from bench.search.presets import get_preset

    out = []
    for row in spec.rows:
        if row.search:
            preset = row.search.get(model) if isinstance(row.search, dict) else row.search
            if preset is None:
                continue
            get_preset(preset)
            args = row.search_args.get(model, "") if isinstance(row.search_args, dict) else row.search_args
            row = replace(row, search=preset, search_args=args)
        exp = _experiment(row, searches or {}, overrides)
        exp.plan()   # a plan the config decides is checked now (a pattern's tokens, a DeepCache interval, ...)
        out.append((row, exp))
    return out


def validate_rows(spec: ExperimentSpec, model: str, bundle) -> None:
    """Every row of ``spec`` checked against the loaded model (branches, grid, K, ...) before anything runs."""
    for _, exp in prepared_rows(spec, model):
        exp.validate(bundle)


def _named_searches(store, searches: dict) -> None:
    """A search the caller names (``Options.searches``) that the store does not hold is bad input (one line naming
    it and the stored ones), before anything is written."""
    from .searched import require_search

    for name in searches.values():
        if name:
            require_search(store, name)


def _setting(spec, options, bundle):
    from bench.rows import RowSetting

    n = options.images or spec.images
    from bench.search.setup import text_condition

    ref = model_inputs(options, options.model or spec.default_model).reference
    # prompted rows sample with the model's default guidance (SD: 7.5), unguided otherwise: as searches do
    prompts, guidance = text_condition(bundle, n, ref.prompts_file)
    quality = {"extractor_weights": ref.extractor_weights} if ref.extractor_weights else {}
    return RowSetting(n_images=n, teacher_steps=spec.teacher_steps, real=ref.real, extractor=ref.extractor,
                      batch_size=min(n, 250), prompts=prompts, clip_model=ref.clip_model,
                      clip_pretrained=ref.clip_pretrained, guidance_scale=guidance, **quality)


def model_inputs(options: Options, model: str):
    """The model's checked inputs (the caller's, else the model's defaults checked now), kept on ``options``."""
    if options.inputs is None or options.inputs.name != model:
        from bench.evaluation.inputs import resolve_inputs

        options.inputs = resolve_inputs(model, options.weights, device=options.device)
    return options.inputs


LATENCY_COLUMNS = {"latency_s_per_image", "latency_iqr_s_per_image"}


def _quality(spec, row, exp, bundle, store, options, ctx):
    """The row's keys (its controlled latency first when the table shows it, the measured row last), reused, plan."""
    from bench.rows import latency_key, measure, row_key

    run = exp.build(bundle, ctx)
    setting = _setting(spec, options, bundle)
    timed = bool(LATENCY_COLUMNS & set(spec.columns))
    _, reused = measure(bundle, run, setting, store, options.cache_dir, options.progress, bootstrap=options.bootstrap,
                        latency=timed)
    if options.runs is not None:
        options.runs[row.label] = run
    keys = ([latency_key(bundle, run, setting)] if timed else []) + [row_key(bundle, run, setting, options.bootstrap)]
    return keys, reused, run.plan, timesteps(bundle, run.scheduler, len(run.plan))


def timesteps(bundle, scheduler, length: int) -> list[int]:
    """The timesteps a plan of ``length`` steps runs at under ``scheduler`` (a registry name or a factory, as a
    run's): where a schedule strip draws each step."""
    from bench.generate import scheduler_maker

    return [int(t) for t in scheduler_maker(scheduler)(bundle.scheduler_config, length).timesteps]


def fill(spec: ExperimentSpec, store, options: Options) -> tuple[list[Cell], list[Comparison]]:
    """Fill the missing cells of ``spec`` on ``options.model``; ``store`` may be None only with dry_run."""
    model = resolve_model(spec, options.model)
    info = get_model(model)
    prepared = prepared_rows(spec, model, options.searches, options.overrides)
    have_weights = info.shipped or options.weights is not None
    command = fill_command(spec.name, model)
    cells: list[Cell] = []
    if spec.measures != "rows":
        return PER_MODEL[spec.measures](spec, model, store, options, have_weights, command), []
    if spec.filled_by and not spec.rows:
        return _elsewhere(spec, store, model), []
    from baselines.registry import MissingInput

    from .searched import method_context

    _named_searches(store, options.searches)
    ctx = method_context(store, options.cache_dir, options.progress)
    bundle = options.bundle
    for row, exp in prepared:
        try:
            exp = exp.resolve(ctx)          # a stored search's plan
        except MissingInput as missing:     # not stored yet: the cell names the command that stores it
            cells.append(Cell(row.label, "search", command=command_for_model(missing.command, model), note=row.note))
            continue
        note = row.note or exp.describe()
        planned = exp.plan()                # None: decided on the model (AutoDiffusion's search)
        tokens = planned[0].tokens() if planned is not None else None
        if options.dry_run:
            cells.append(Cell(row.label, "planned" if have_weights else "cost only", [], "" if have_weights
                              else command, note, tokens))
            continue
        keys = [] if planned is None else [_cost_key(store, info.cost_preset, *planned, row.label,
                                                     spec.teacher_steps, model)]
        if not have_weights:
            cells.append(Cell(row.label, "cost only", keys, command, note, tokens))
            continue
        if bundle is None:
            bundle = model_inputs(options, model).load()
        quality_keys, reused, run_plan, steps_at = _quality(spec, row, exp, bundle, store, options, ctx)
        # the measured row last (compare pairs read it there; the report lets it override the architecture's cost
        # cell: its MACs are counted on the model as it ran, ToMe applied, its real context length)
        cells.append(Cell(row.label, "reused" if reused else "measured", keys + quality_keys, "", note,
                          run_plan.tokens(), timesteps=steps_at,
                          base_grid=timesteps(bundle, "ddim", spec.teacher_steps)))
    return cells, _compare(spec, cells, store, options)


def _cost_key(store, preset, plan, sched, label, teacher_steps, model):
    from .costs import plan_cost_rows

    return plan_cost_rows(store, preset, plan, sched, label, teacher_steps, model)


def _branch_cells(spec, model, store, options, have_weights, command) -> list[Cell]:
    """Fig. B.1: the partial steps' MACs against their branch on each model's architecture (random weights)."""
    if options.dry_run:
        return [Cell(m, "planned") for m in spec.models]
    done = [(m, *_branch_key(store, m)) for m in ([options.model] if options.model else spec.models)]
    return [Cell(m, "reused" if reused else "measured", [key]) for m, key, reused in done]


def _branch_key(store, model):
    from .costs import branch_rows

    return branch_rows(store, get_model(model).cost_preset)


def _plain(value):
    """A pandas cell as the store's own value (numpy int -> int, NaN -> None), for ``Cell.where``."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _of_model(stored: str | None, model: str) -> bool:
    """Whether a row's ``model`` column (a search's loader kind, an ablation's bundle name ``loader:folder``) is the
    experiment model ``model``."""
    loader = get_model(model).loader
    return stored in (model, loader) or str(stored).split(":")[0] == loader


def _elsewhere(spec, store, model: str) -> list[Cell]:
    """A table filled by another command (``spec.filled_by``): one cell per ``group_by`` group of the store's rows of
    experiment ``spec.source`` (default the spec's name) that match ``spec.where``; a table that does not show the
    model (no ``model`` column, not grouped by it) takes only ``model``'s rows.  A cell's keys are in the order they
    were written (a later result of the same group overrides an earlier one in the report) and its ``where`` picks
    the group's rows out of them.  Before the writer ran: one cell naming the command that fills the table."""
    frame = store.frame(experiment=spec.source or spec.name) if store is not None else None
    if frame is not None:
        for column, value in spec.where.items():
            frame = frame[frame[column] == value]
        if "model" not in spec.columns and "model" not in spec.group_by:
            frame = frame[frame["model"].map(lambda m: _of_model(m, model))]
    if frame is None or frame.empty:
        return [Cell("(no rows yet)", "elsewhere", command=command_for_model(spec.filled_by, model))]
    by = list(spec.group_by) or ["key"]
    cells, seen = [], {}
    for values, g in frame.groupby(by, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        where = {**spec.where, **{c: _plain(v) for c, v in zip(by, values)}}
        labels = {(x or {}).get("label") for x in g["extra"]} - {None, ""}
        label = labels.pop() if len(labels) == 1 else ", ".join(str(v) for v in where.values())
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        cells.append(Cell(label, "reused", list(dict.fromkeys(g["key"])), command_for_model(spec.filled_by, model),
                          where=where))
    return cells


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


# spec.measures -> the cells of an experiment measured per model rather than per row
PER_MODEL = {"branch-costs": _branch_cells,
             "similarity": lambda spec, model, store, options, have_weights, command: [
                 _similarity_cell(spec, model, store, options, have_weights, command)]}
