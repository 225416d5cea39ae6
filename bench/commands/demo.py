"""``flexbench demo``: the suite's main job on the embedded default, nothing downloaded.

Four rows on the embedded digits model, the same seeds: the 100-step DDIM teacher, DeepCache (uniform: a full
step every ``--interval`` steps, partial steps at ``--branch`` in between), Flexiffusion (the best plan of a short
search, preset ``embedded-demo``: 50 % of the teacher's MACs) and AutoDiffusion at a small budget (K steps and
its own short evolutionary search).  The search runs first, in-process (bench.search.session, what ``flexbench search`` runs); then the rows are
measured through the experiments runner (bench.experiments.runner.fill: NFE, avg MACs, speed-up, latency, FID /
rFID with bootstrap intervals, IS, precision, recall), two pairs get a paired bootstrap of their FID difference,
and the table, Pareto plots, schedule strips and a sample grid (teacher vs each method, same seeds) are written as
a self-contained HTML report (``--report``, default ``demo-report/index.html``).  Everything goes to the results
store: a second run reuses the search, the searches' evaluations and every row, and only renders.
"""
from __future__ import annotations

from flexiffusion.errors import UserError

PRESET = "embedded-demo"
STEPS = 100                                   # the teacher's grid (the preset's)
COLUMNS = ["nfe", "avg_macs_paper_g", "speedup_paper", "latency_s_per_image", "fid", "rfid", "isc", "precision",
           "recall"]
LABELS = ("teacher (DDIM 100)", "DeepCache", "Flexiffusion", "AutoDiffusion")


def _search_request(args, store_path, cache):
    """The demo's short search (the preset's settings unless overridden) as a library request."""
    from bench.cache import stable_hash
    from bench.search.session import SearchRequest

    over = {k: getattr(args, f"search_{k}") for k in ("images", "iterations", "initial")}
    over = {k: v for k, v in over.items() if v is not None}
    name = f"{PRESET}-tile-s0" + (f"-{stable_hash(over)[:8]}" if over else "")
    return SearchRequest(PRESET, seed=0, name=name, store=str(store_path), out=str(cache / "demo-search" / name),
                         threads=args.threads, cache_dir=args.cache_dir, **over)


def _spec(args):
    from bench.experiments.spec import ExperimentSpec, RowSpec

    ad = {"k": args.ad_k, "search_images": args.ad_images, "fitness": "fid",
          "evolution": {"population": args.ad_population, "top_k": max(1, args.ad_population // 3),
                        "mutation": max(1, args.ad_population // 2), "crossover": max(1, args.ad_population // 4),
                        "epochs": args.ad_epochs, "stage1_epochs": 1, "ramp_epochs": 1}}
    rows = [RowSpec(LABELS[0], "teacher", {"steps": STEPS}),
            RowSpec(f"DeepCache N={args.interval} b={args.branch}", "deepcache",
                    {"steps": STEPS, "interval": args.interval, "branch": args.branch}),
            RowSpec("Flexiffusion", search=PRESET, note=f"best plan of the short search {PRESET}"),
            RowSpec(f"AutoDiffusion K={args.ad_k}", "autodiffusion", ad,
                    note=f"searched: {args.ad_images} images per evaluation (FID vs the digits' training split), "
                         f"population {args.ad_population}, {args.ad_epochs} epochs")]
    return ExperimentSpec(name="demo", title="flexbench demo: embedded digits model", kind="table",
                          paper="the main job: teacher, DeepCache, Flexiffusion and AutoDiffusion", models=["embedded"],
                          columns=COLUMNS, rows=rows, images=args.n, teacher_steps=STEPS, plot="pareto",
                          compare=[["Flexiffusion", rows[1].label], [rows[1].label, LABELS[0]]])


def _check(args) -> None:
    from bench.rows import MIN_ROW_IMAGES

    if args.n < MIN_ROW_IMAGES:
        raise UserError(f"--n {args.n}: a row needs at least {MIN_ROW_IMAGES} images (1000 for the paper's protocol)")
    for name in ("threads", "search_images", "search_iterations", "search_initial", "ad_k", "ad_images",
                 "ad_population", "ad_epochs"):
        v = getattr(args, name)
        low = 0 if name == "search_iterations" else 2 if name in ("search_images", "ad_images") else 1
        if v is not None and v < low:
            raise UserError(f"--{name.replace('_', '-')} {v}: need at least {low}")
    if args.bootstrap < 2:
        raise UserError(f"--bootstrap {args.bootstrap}: use at least 2 resamples (200 is the default)")


def run(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from flexiffusion.threads import num_threads

    from bench.cache import cache_dir
    from bench.experiments.runner import Options, fill, validate_rows
    from bench.models import load_model
    from bench.search.session import prepare, run_prepared
    from bench.store import ResultStore

    _check(args)
    spec = _spec(args)
    bundle = load_model("embedded", device=args.device)
    validate_rows(spec, "embedded", bundle)   # every row checked before anything runs or is written
    store_path = Path(args.store or cache_dir(args.cache_dir) / "results.sqlite")
    search = prepare(_search_request(args, store_path, cache_dir(args.cache_dir)))
    print(f"1/3 Flexiffusion search ({PRESET}; a rerun replays it from the store): {search.describe()}")
    bar = tqdm(total=search.run.config.iterations + 1, desc="search", unit="it")
    try:
        result, _, fitness = run_prepared(search, lambda stats, fitness: bar.update(1))
    finally:
        bar.close()
    print(f"  best: rFID {result.best.fitness:.5g}, NFE {result.best.plan.nfe}; evaluations: {fitness.done} new, "
          f"{fitness.cached} read from the store")
    runs: dict = {}
    options = Options("embedded", images=args.n, bootstrap=args.bootstrap, cache_dir=args.cache_dir,
                      device=args.device, searches={PRESET: search.name}, runs=runs, bundle=bundle)
    print(f"2/3 rows at {args.n} images each (seeds 0-{args.n - 1}); results store {store_path}")
    with num_threads(args.threads), ResultStore(store_path) as store:
        cells, comparisons = fill(spec, store, options)
        for c in cells:
            print(f"  {c.label}: {c.status}")
        print("3/3 report: sampling the grid's 8 images per row" if args.report else "3/3 table")
        _print_and_report(args, spec, cells, comparisons, store, bundle, runs)
    return 0


def _grid(bundle, runs: dict, seeds) -> dict:
    from bench.generate import generate_images

    out = {}
    for label, run in runs.items():
        with run.hooks():
            out[label] = generate_images(bundle, run.plan, seeds, scheduler=run.scheduler, batch_size=len(seeds),
                                         progress=False)
    return out


def _print_and_report(args, spec, cells, comparisons, store, bundle, runs) -> None:
    import tempfile

    from flexiffusion.io import atomic_write_json
    from bench.experiments.record import Samples, store_record
    from reports import site
    from reports.experiment import render

    with tempfile.TemporaryDirectory() as tmp:
        done = render(spec, "embedded", cells, comparisons, store, tmp, cache_dir=args.cache_dir)
        print()
        print(f"embedded digits model, {STEPS}-step DDIM teacher, {args.n} images per row (seeds 0-{args.n - 1}); "
              "MACs: paper convention (U-Net only, batch 1, attention matmuls not counted)")
        print(done.markdown)
        if args.out:
            rows = [{"label": label, **{k: (None if v != v else v) for k, v in values.items()}}
                    for label, values in done.raw.to_dict(orient="index").items()]
            out = atomic_write_json(args.out, {"rows": rows, "comparisons": done.comparisons}, sort_keys=False,
                                    default=str)
            print(f"wrote {out}")
    samples = None
    if args.report:
        seeds = list(range(min(8, args.n)))
        samples = Samples(seeds, _grid(bundle, runs, seeds))
    key = store_record(store, spec, "embedded", cells, comparisons, samples)   # what `flexbench report` renders
    if args.report:
        print(f"wrote {site.write_experiment(store, key, args.report, cache_dir=args.cache_dir)}")


def register(sub) -> None:
    p = sub.add_parser("demo", help="main job: teacher, DeepCache, a short Flexiffusion search and AutoDiffusion on "
                                    "the embedded model (NFE, MACs, latency, FID, rFID, IS, P/R; HTML report)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--n", type=int, default=1000, help="images per row (default 1000)")
    p.add_argument("--interval", type=int, default=5, help="DeepCache: full step every N steps (default 5)")
    p.add_argument("--branch", type=int, default=3, help="DeepCache: skip branch of the partial steps (default 3)")
    p.add_argument("--search-images", type=int, default=None, help="Flexiffusion search: images per candidate "
                                                                    "(default: the embedded-demo preset's, 48)")
    p.add_argument("--search-iterations", type=int, default=None, help="search iterations (default 3)")
    p.add_argument("--search-initial", type=int, default=None, help="search initial population (default 8)")
    p.add_argument("--ad-k", type=int, default=10, help="AutoDiffusion: K steps (default 10)")
    p.add_argument("--ad-images", type=int, default=128, help="AutoDiffusion: images per evaluation (default 128)")
    p.add_argument("--ad-population", type=int, default=8, help="AutoDiffusion: population (default 8)")
    p.add_argument("--ad-epochs", type=int, default=2, help="AutoDiffusion: epochs (default 2)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the intervals (default 200)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None, help="cache of teacher images / features / statistics")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--store", default=None, help="results store (default CACHE/results.sqlite); everything already "
                                                 "stored is reused, not recomputed")
    p.add_argument("--report", default="demo-report", help="HTML report directory (default demo-report; '' for none)")
    p.set_defaults(func=run)
