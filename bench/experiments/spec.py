"""An experiment file (TOML, ``bench/experiments/specs/NAME.toml``) parsed into dataclasses, strictly: an unknown
field, a missing one or a value of the wrong type is one UserError line naming the field and the file.

Top level: ``title``, ``kind`` (table | figure), ``paper`` (what the paper's table/figure shows), ``models`` (the
models it is for; the first is the default), ``columns`` (metrics, in order), ``images`` (default images per row), ``teacher_steps``
(the DDIM teacher of rFID and the MACs speed-up),
``plot`` (none | pareto | branches | similarity | quality-vs-branch | schedules), ``layout`` (the table's shape:
rows = one per row / cell, branches = one per model and cost convention with a column per branch, per-method = one
per model and method), ``filled_by`` (a command of another part of the suite that writes this experiment's rows
into the store, e.g. the rFID ablation) with ``source`` (the store ``experiment`` of those rows, default the spec's
name), ``where`` (store column -> value: only those rows) and ``group_by`` (store columns: one table row per
group), ``compare``
(pairs of row labels whose FID difference gets a paired bootstrap), ``[[rows]]``: ``label``, ``method`` +
``config`` (+ ``tome``) from the baselines registry, or ``search`` (a Flexiffusion search preset, or a table model -> preset:
the row is the stored search's best plan), ``note``.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from flexiffusion.errors import UserError

from .models import MODELS

KINDS = ("table", "figure")
PLOTS = ("none", "pareto", "branches", "similarity", "quality-vs-branch", "schedules")
LAYOUTS = ("rows", "branches", "per-method")
MEASURES = ("rows", "branch-costs", "similarity")   # rows: each [[rows]] entry's method (or filled_by's writer);
                                                    # branch-costs: Fig. B.1 per model; similarity: Fig. 4 per model
SPEC_DIR = Path(str(resources.files("bench.experiments") / "specs"))


@dataclass(frozen=True)
class RowSpec:
    label: str
    method: str = ""
    config: dict = field(default_factory=dict)
    tome: dict | None = None
    search: str | dict = ""      # a search preset, or {model = preset}: rows without the model's preset drop out
    search_name: str = ""        # the stored search the row takes (default: the preset's newest)
    search_args: str | dict = ""  # space restrictions of that search (e.g. "--branches 2", or {model = ...}),
                                  # shown in the command that fills the row
    note: str = ""


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    title: str
    kind: str
    paper: str
    models: list
    columns: list
    rows: list = field(default_factory=list)
    images: int = 200
    teacher_steps: int = 100
    plot: str = "none"
    filled_by: str = ""
    source: str = ""               # the store's ``experiment`` whose rows fill a filled_by table (default: name)
    group_by: list = field(default_factory=list)   # store row columns splitting those rows into table rows
    where: dict = field(default_factory=dict)      # store row column -> value: only those rows of ``source``
    layout: str = "rows"
    measures: str = "rows"         # what fills the cells: the rows' methods, or a per-model measurement
    compare: list = field(default_factory=list)
    path: str = ""

    @property
    def default_model(self) -> str:
        return self.models[0]


def _check_fields(cls, data: dict, where: str, path: Path, skip=("name", "path")) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{path}: {where} must be a table of fields")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise UserError(f"{path}: {where} has no field {key!r} (fields: {', '.join(fields)})")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            raise UserError(f"{path}: {where} misses the field {name!r}")
        if name in data:
            kinds = typing.get_args(hints[name]) or (hints[name],)
            kinds = tuple(typing.get_origin(k) or k for k in kinds if k is not type(None))
            value = data[name]
            if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
                raise UserError(f"{path}: {where}.{name} = {value!r}: expected {' or '.join(k.__name__ for k in kinds)}")
    return data


def parse(text: str, name: str, path: Path, check_command=None) -> ExperimentSpec:
    """``check_command(words) -> problem or ""``: validates ``filled_by`` with the CLI's parser (see :func:`filler`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: malformed TOML ({exc})") from None
    _check_fields(ExperimentSpec, data, "the experiment", path)
    rows = []
    for i, r in enumerate(data.pop("rows", [])):
        _check_fields(RowSpec, r, f"rows[{i}]", path, skip=())
        if bool(r.get("method")) == bool(r.get("search")):
            raise UserError(f"{path}: rows[{i}] ({r['label']}) needs exactly one of 'method' or 'search'")
        if (r.get("search_name") or r.get("search_args")) and not r.get("search"):
            raise UserError(f"{path}: rows[{i}] ({r['label']}) has search_name / search_args but no 'search' preset")
        rows.append(RowSpec(**r))
    spec = ExperimentSpec(name=name, rows=rows, path=str(path), **data)
    if spec.kind not in KINDS:
        raise UserError(f"{path}: kind = {spec.kind!r}: choose one of {', '.join(KINDS)}")
    if spec.plot not in PLOTS:
        raise UserError(f"{path}: plot = {spec.plot!r}: choose one of {', '.join(PLOTS)}")
    if spec.measures not in MEASURES:
        raise UserError(f"{path}: measures = {spec.measures!r}: choose one of {', '.join(MEASURES)}")
    if spec.layout not in LAYOUTS:
        raise UserError(f"{path}: layout = {spec.layout!r}: choose one of {', '.join(LAYOUTS)}")
    bad = [m for m in spec.models if m not in MODELS]
    if bad or not spec.models:
        raise UserError(f"{path}: models = {spec.models!r}: each must be one of {', '.join(MODELS)}")
    _check_columns(spec, path, check_command)
    labels = {r.label for r in rows}
    for pair in spec.compare:
        if len(pair) != 2 or not set(pair) <= labels:
            raise UserError(f"{path}: compare entry {pair!r} must name two row labels of this file")
    return spec


GROUP_COLUMNS = ("method", "model", "n_images", "key", "plan_digest", "scheduler", "device")


def filler(command: str, path, check_command=None, where: str = "filled_by") -> str:
    """The sub-command of the ``flexbench`` invocation ``command`` (``FILE`` stands for a path), checked by
    ``check_command(words)`` (the CLI's own parser, :func:`bench.cli.parse_invocation`, passed down by the
    commands) or, without it, against the sub-commands that write rows (bench.results); UserError naming the spec
    file and the field when it is no real invocation."""
    import shlex

    from bench.results import METRICS

    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise UserError(f"{path}: {where} = {command!r} is not a command line ({exc})") from None
    if len(words) < 2 or words[0] != "flexbench":
        raise UserError(f"{path}: {where} = {command!r} must be a flexbench command line (flexbench SUBCOMMAND ...)")
    if check_command is not None:
        problem = check_command(words[1:])
        if problem:
            raise UserError(f"{path}: {where} = {command!r} is not a valid flexbench invocation ({problem})")
    writers = sorted({w for m in METRICS.values() for w in m.writers})
    if words[1] not in writers:
        raise UserError(f"{path}: {where} = {command!r}: 'flexbench {words[1]}' writes no result rows (writers: "
                        f"{', '.join(writers)})")
    return words[1]


def _check_columns(spec: ExperimentSpec, path, check_command=None) -> None:
    """Every column a registered metric that the writer of this spec's rows produces (bench.results)."""
    from bench.results import METRICS

    writer = filler(spec.filled_by, path, check_command) if spec.filled_by else "experiment"
    for i, name in enumerate(spec.columns):
        if not isinstance(name, str) or name not in METRICS:
            raise UserError(f"{path}: columns[{i}] = {name!r} is no known metric (known: {', '.join(sorted(METRICS))})")
        if writer not in METRICS[name].writers:
            raise UserError(f"{path}: columns[{i}] = {name!r} is not written by 'flexbench {writer}' (written by: "
                            f"{', '.join('flexbench ' + w for w in METRICS[name].writers)})")
    for i, name in enumerate(spec.group_by):
        if name not in GROUP_COLUMNS:
            raise UserError(f"{path}: group_by[{i}] = {name!r}: choose store columns among {', '.join(GROUP_COLUMNS)}")
    for name, value in spec.where.items():
        if name not in GROUP_COLUMNS or not isinstance(value, (str, int)):
            raise UserError(f"{path}: where.{name} = {value!r}: choose store columns among {', '.join(GROUP_COLUMNS)}"
                            " with a string or integer value")
    if (spec.group_by or spec.where or spec.source) and not spec.filled_by:
        raise UserError(f"{path}: source / where / group_by need filled_by (they select the rows another command "
                        "writes)")


def load_file(path, check_command=None) -> ExperimentSpec:
    path = Path(path)
    return parse(path.read_text(), path.stem, path, check_command)


def known() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def load(name: str, check_command=None) -> ExperimentSpec:
    if name not in known():
        raise UserError(f"unknown experiment {name!r}: choose one of {', '.join(known())}")
    return load_file(SPEC_DIR / f"{name}.toml", check_command)
