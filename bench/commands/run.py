"""``flexbench run METHOD``: one baseline's row (NFE, MACs, speed-up, latency, FID, rFID, IS, precision, recall)
through the common harness (bench.rows) into the results store; ``flexbench baselines-table``: the paper's Table 2
columns for every baseline (baselines.table2), as markdown from the store.

Method options: the convenience flags (``--steps``, ``--order``, ``--interval`` ..., ``--search NAME`` / ``--preset``
for ``flexiffusion``: a stored search's best plan) and ``--set KEY=VALUE`` (dotted for nested fields, e.g.
``--set evolution.epochs=4``) fill the method's config dataclass; a flag the method has no field for is an error.  ``--experiment FILE`` runs a JSON experiment (or a list of them) instead:
``{"method": "deepcache", "config": {"interval": 5, "branch": 3}, "tome": null}``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm.auto import tqdm

from flexiffusion.errors import UserError

from .sample import add_model_arguments, add_reference_arguments, reference_kwargs

DEFAULT_STORE = "runs/results.sqlite"
CONFIG_FLAGS = (("steps", int), ("order", int), ("interval", int), ("branch", int), ("form", str),
                ("center", int), ("pow", float), ("scheduler", str), ("k", int), ("budget_layers", int),
                ("fitness", str), ("search", str), ("preset", str))


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_dict(args) -> dict:
    """The method config from the flags and ``--set`` pairs (dotted keys nest)."""
    data: dict = {}
    for name, _ in CONFIG_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    for pair in args.set or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"malformed --set {pair!r}: use KEY=VALUE, e.g. --set evolution.epochs=4")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {pair!r}: {p!r} is not a nested config")
        node[leaf] = _value(value)
    return data


def add_setting_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=1000, help="images per row (default 1000)")
    p.add_argument("--seed0", type=int, default=0, help="first seed (seeds seed0 .. seed0+images-1)")
    p.add_argument("--teacher-steps", type=int, default=100, help="DDIM steps of the teacher (default 100)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--prompt", action="append", default=None, help="prompt(s) for text-to-image models")
    add_reference_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--cache-dir", default=None, help="cache of teacher images / features (default $FLEXBENCH_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def inputs_from_args(args):
    """The model and its quality reference, every input checked (one line, exit 2) before anything loads."""
    from bench.evaluation.inputs import resolve_inputs

    if args.prompt and args.prompts:
        raise UserError("give --prompt TEXT or --prompts FILE, not both")
    inputs = resolve_inputs(args.model, args.weights, device=args.device, **reference_kwargs(args))
    if args.prompt and not inputs.entry.text:
        raise UserError(f"--prompt given, but the {args.model} model takes no text: drop --prompt")
    for note in inputs.notes:
        print(note)
    return inputs


def setting_from_args(args, inputs):
    from bench.rows import RowSetting

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: need at least 1 thread")
    ref = inputs.reference
    prompts = tuple(args.prompt or ())
    if not prompts and ref.prompts:
        prompts = tuple(ref.prompts[i % len(ref.prompts)] for i in range(args.images))
    return RowSetting(args.images, args.seed0, args.teacher_steps, ref.real, ref.extractor, args.batch_size,
                      prompts, ref.clip_model, ref.clip_pretrained,
                      extractor_weights=ref.extractor_weights).validate()


def experiments_from_args(args) -> list:
    from baselines.registry import Experiment, experiments_from_json

    if args.experiment:
        if args.method:
            raise UserError("give either METHOD or --experiment FILE, not both")
        path = Path(args.experiment)
        if not path.is_file():
            raise UserError(f"experiment file {path} not found")
        return experiments_from_json(path.read_text())
    if not args.method:
        raise UserError("name a METHOD (e.g. deepcache) or pass --experiment FILE")
    tome = None
    if args.tome_ratio is not None or args.tome_set:
        tome = {"ratio": args.tome_ratio} if args.tome_ratio is not None else {}
        for pair in args.tome_set or []:
            key, sep, value = pair.partition("=")
            if not sep:
                raise UserError(f"malformed --tome-set {pair!r}: use KEY=VALUE, e.g. --tome-set max_downsample=2")
            tome[key] = _value(value)
    return [Experiment.from_dict({"method": args.method, "config": config_dict(args), "tome": tome})]


def _resolved(experiments, path) -> list:
    """The experiments completed from the store at ``path`` read only (a ``flexiffusion`` row's stored search; a
    search that is not stored is one line naming it and the stored ones): nothing is created or written."""
    import contextlib

    from bench.experiments.searched import stored_search
    from bench.store import ResultStore
    from baselines.registry import Context

    store = ResultStore(path, migrate_to=0) if Path(path).is_file() else None
    with store or contextlib.nullcontext():
        ctx = Context(store, stored_search=stored_search(store))
        return [e.resolve(ctx) for e in experiments]


def measure_experiments(bundle, experiments, setting, args, stored_only: bool = False):
    """Validate all, then open the store, build and measure each: ``[(record, reused)]`` (``stored_only``: only
    the experiments already in the store, nothing measured)."""
    from bench.experiments.searched import method_context
    from bench.rows import as_record, measure
    from bench.store import ResultStore
    from flexiffusion.threads import num_threads

    experiments = _resolved(experiments, args.store)
    for e in experiments:  # every bad input fails here, before anything is computed or written
        e.validate(bundle)
    out = []
    with num_threads(args.threads), ResultStore(args.store) as store:
        ctx = method_context(store, args.cache_dir, progress=not args.quiet)
        for e in tqdm(experiments, desc="rows", unit="row", disable=args.quiet or len(experiments) == 1):
            if stored_only and not _stored(e, bundle, store, setting):
                continue
            run = e.build(bundle, ctx)
            rows, reused = measure(bundle, run, setting, store, args.cache_dir, progress=not args.quiet)
            out.append((as_record(rows), reused))
    return out


def _stored(experiment, bundle, store, setting) -> bool:
    """Whether the experiment's row is in the store (built without a search fitness: a method whose search is not
    stored yet raises :class:`~baselines.registry.MissingInput` and is not)."""
    from baselines.registry import Context, MissingInput
    from bench.experiments.searched import stored_search
    from bench.rows import row_key

    try:
        run = experiment.build(bundle, Context(store, progress=False, stored_search=stored_search(store)))
    except MissingInput:
        return False
    return store.has(row_key(bundle, run, setting))


def run(args) -> int:
    from baselines.table2 import render_markdown

    inputs = inputs_from_args(args)
    setting = setting_from_args(args, inputs)
    experiments = experiments_from_args(args)
    bundle = inputs.load()
    results = measure_experiments(bundle, experiments, setting, args)
    print(render_markdown([r for r, _ in results]), end="")
    for record, reused in results:
        print(f"{record['label']}: {'reused from' if reused else 'stored in'} {args.store} "
              f"({record['n_images']} images, {record['scheduler']}, {record['threads']} threads)")
    return 0


def run_table(args) -> int:
    from baselines.table2 import table2_experiments, render_markdown
    from flexiffusion.io import atomic_write_text

    inputs = inputs_from_args(args)
    setting = setting_from_args(args, inputs)
    letters = [x.strip().upper() for x in args.plus.split(",") if x.strip()]
    experiments = table2_experiments(args.teacher_steps, args.branch, letters, _ints(args.small, "--small"),
                                     _ints(args.ad_steps, "--ad-steps"), _ints(args.dpm_deepcache, "--dpm-deepcache"))
    bundle = inputs.load()
    results = measure_experiments(bundle, experiments, setting, args, stored_only=args.stored_only)
    text = (f"{args.model} model, {setting.n_images} images per row (seeds {setting.seed0}-"
            f"{setting.seed0 + setting.n_images - 1}), teacher DDIM {setting.teacher_steps}; avg MACs = U-Net MACs "
            f"per image / {setting.teacher_steps}; speed-up by paper MACs vs the teacher; FID/IS/precision/recall vs "
            f"{setting.real} ({setting.extractor}); rFID vs the teacher\n\n" + render_markdown([r for r, _ in results]))
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    return 0


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"malformed {flag} {text!r}: use comma-separated integers, e.g. 4,6,8,10") from None


def register(sub) -> None:
    from baselines.registry import METHODS

    p = sub.add_parser("run", help="one baseline's row (NFE, MACs, speed-up, latency, FID, rFID, ...) into the store",
                       description=__doc__.split("\n\n")[0],
                       epilog="methods: " + "; ".join(f"{m.name}: {m.help}" for m in METHODS.values()))
    p.add_argument("method", nargs="?", choices=sorted(METHODS), metavar="METHOD", help="a registered method")
    p.add_argument("--experiment", default=None, help="JSON file: an experiment or a list of them")
    add_model_arguments(p)
    for name, kind in CONFIG_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                       help=f"config field {name} (methods that have it)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field (dotted for nested)")
    p.add_argument("--tome-ratio", type=float, default=None, help="apply ToMe with this ratio (any method)")
    p.add_argument("--tome-set", action="append", metavar="KEY=VALUE", help="other ToMeConfig fields")
    add_setting_arguments(p)
    p.set_defaults(func=run)

    t = sub.add_parser("baselines-table", help="the paper's Table 2 columns for every baseline, markdown from the store",
                       description=(__doc__ or "").split("\n\n")[0])
    add_model_arguments(t)
    t.add_argument("--branch", type=int, default=3, help="DeepCache branch (default 3)")
    t.add_argument("--plus", default="C", help="DeepCache settings with '+' rows, e.g. C,D (default C)")
    t.add_argument("--small", default="10", help="step counts of PLMS / DPM-Solver rows (default 10)")
    t.add_argument("--ad-steps", default="4,6,10", help="step counts of DDIM / AutoDiffusion rows (default 4,6,10)")
    t.add_argument("--dpm-deepcache", default="15", help="steps of DeepCache on DPM-Solver-3 (default 15)")
    t.add_argument("--out", default=None, help="also write the markdown here")
    t.add_argument("--stored-only", action="store_true", help="render the rows already in the store, measure none")
    add_setting_arguments(t)
    t.set_defaults(func=run_table)
