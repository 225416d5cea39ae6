"""``flexbench experiment NAME``: run the missing cells of a paper table / figure (bench/experiments/specs/) into
the results store, reusing every stored result by key, then render it from the store only (reports/) into
OUT/NAME/.  ``--list`` names them all; ``--dry-run`` says what would run and writes nothing."""
from __future__ import annotations

import time

from flexiffusion.errors import UserError

DEFAULT_STORE = "runs/results.sqlite"


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run and render one paper table or figure (experiments as data)")
    p.add_argument("name", nargs="?", help="table1 .. table10, fig4, figB1, figD1, figH1 (--list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--model", help="model to run on (default: the experiment's first, usually embedded)")
    p.add_argument("--weights", help="weights folder of a non-shipped model (DDPM, LDM, SD)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--out", default="runs/experiments", help="output folder (OUT/NAME/...)")
    p.add_argument("--images", type=int, help="images per row (default: the experiment's)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for intervals (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                   help="override a config field of every row of METHOD (VALUE as JSON, else text; repeatable), "
                        "e.g. autodiffusion.search_images=16 autodiffusion.evolution.epochs=1 for a smoke run: "
                        "the rows' configs, and so their store keys, change")
    p.add_argument("--dry-run", action="store_true", help="say what would run; write nothing")
    from .sample import add_reference_arguments

    add_reference_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _list() -> int:
    from bench.cli import parse_invocation
    from bench.experiments.spec import known, load

    for name in known():
        s = load(name, parse_invocation)
        print(f"{name:8s} {s.kind:6s} models {', '.join(s.models):40s} {s.title}")
    return 0


def run(args) -> int:
    from bench.experiments.runner import Options, fill, prepared_rows, resolve_model
    from bench.experiments.spec import known, load

    if args.list:
        return _list()
    if not args.name:
        raise UserError(f"name an experiment: one of {', '.join(known())} (or --list)")
    from bench.cli import parse_invocation

    spec = load(args.name, parse_invocation)   # columns and filled_by checked against the metrics and the CLI
    if args.images is not None and args.images < 10:
        raise UserError(f"--images {args.images}: a row needs at least 10 images")
    if args.bootstrap < 2:
        raise UserError(f"--bootstrap {args.bootstrap}: use at least 2 resamples (200 is the default)")
    model = resolve_model(spec, args.model)
    overrides = parse_overrides(args.set)
    prepared_rows(spec, model, overrides=overrides)   # every row's config (with --set) checked before the store opens
    every_model = spec.measures == "branch-costs" and not args.model   # Fig. B.1: all its models at once
    inputs = _inputs(spec, model, args) if not every_model else None
    opts = Options(None if every_model else model, args.weights, args.images, args.bootstrap, args.dry_run,
                   progress=not args.quiet, overrides=overrides, device=args.device, inputs=inputs)
    if args.dry_run:
        import contextlib

        store = _read_only_store(args.store)
        with store or contextlib.nullcontext():
            cells, _ = fill(spec, store, opts)
        for c in cells:
            print(f"{c.label}: {c.status}" + (f"  ({c.command})" if c.command else ""))
        return 0
    from flexiffusion.threads import num_threads

    from bench.experiments.record import store_record
    from bench.store import ResultStore
    from reports.experiment import render

    t0 = time.perf_counter()
    with ResultStore(args.store) as store, num_threads(args.threads):
        cells, comparisons = fill(spec, store, opts)
        store_record(store, spec, model, cells, comparisons)   # what `flexbench report` renders again
        rendered = render(spec, model, cells, comparisons, store, args.out)
    print(rendered.markdown)
    counts = {s: sum(c.status == s for c in cells) for s in sorted({c.status for c in cells})}
    print(f"{spec.name} on {model}: {', '.join(f'{n} {s}' for s, n in counts.items())}; "
          f"{time.perf_counter() - t0:.1f} s; written to {rendered.folder}")
    return 0


def _inputs(spec, model: str, args):
    """The model's inputs checked before anything is sampled: weights (layout, image shape), and where the spec
    measures rows, the quality reference (real data, extractor and CLIP weights, prompts); None when the weights
    are not here (only the architecture's cost cells fill, nothing loads)."""
    from bench.evaluation.inputs import resolve_inputs
    from bench.experiments.models import get_model

    from .sample import reference_kwargs

    entry = get_model(model)
    given = {k: v for k, v in reference_kwargs(args).items() if v is not None}
    if not entry.shipped and args.weights is None:
        if given:
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in given)} given without --weights: the "
                            f"{model} cells that need them run on its weights (pass --weights DIR)")
        from flexiffusion.devices import resolve_device

        resolve_device(args.device)
        return None
    quality = spec.measures == "rows" and bool(spec.rows)   # a filled_by table measures nothing itself
    if not quality and given:
        raise UserError(f"{spec.name} measures no image quality: drop {', '.join('--' + k.replace('_', '-') for k in given)}")
    inputs = resolve_inputs(model, args.weights, device=args.device, quality=quality, **reference_kwargs(args))
    for note in inputs.notes:
        print(note)
    return inputs


def _read_only_store(path):
    """The store a dry run consults (its stored searches fill the Flexiffusion rows), opened without migrating;
    None where the file does not exist yet: a dry run creates and writes nothing."""
    from pathlib import Path

    from bench.store import SCHEMA_VERSION, ResultStore

    if not (path and Path(path).is_file()):
        return None
    store = ResultStore(path, migrate_to=0)  # corrupted, locked or newer: one line, as for a real run
    if store.schema_version() < SCHEMA_VERSION:  # a real run migrates it first; a dry run does not write
        print(f"note: store {path} has schema version {store.schema_version()} (a run migrates it to "
              f"{SCHEMA_VERSION}); this dry run does not read it")
        store.close()
        return None
    return store


def parse_overrides(items: list[str]) -> dict:
    """``["autodiffusion.evolution.epochs=1", ...]`` -> ``{"autodiffusion": {"evolution": {"epochs": 1}}}``."""
    import json

    out: dict = {}
    for item in items:
        path, eq, text = item.partition("=")
        parts = path.split(".")
        if not eq or len(parts) < 2 or not all(parts):
            raise UserError(f"--set {item!r}: write METHOD.FIELD=VALUE, e.g. autodiffusion.search_images=16")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        node = out.setdefault(parts[0], {})
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out
