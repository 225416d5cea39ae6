"""``flexbench report --store FILE --out DIR``: one self-contained HTML site of everything the results store holds
(reports/site.py): an index, one page per experiment (`flexbench experiment`, `flexbench demo`), Flexiffusion search
and rFID ablation, the conformance table when it is stored, and the measured rows no experiment names.  Tables with
provenance, Pareto plots beside forest plots of paired differences against a reference row (``--reference``,
default the teacher), schedule strips at their timesteps, sample grids where the writer sampled them.  The site is
built in a temporary folder and moved into place whole.

Bad input is one ``error:`` line and exit status 2: a store file that does not exist (nothing written), one that is
no results store, a ``--reference`` no experiment measured.  A store with no results is bad input too: the site's
index says so (and how to fill the store), the command says so in one line and exits 2."""
from __future__ import annotations

from flexiffusion.errors import UserError

DEFAULT_STORE = "runs/results.sqlite"


def register(sub) -> None:
    p = sub.add_parser("report", help="one HTML site of every experiment, search and ablation in the results store",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--out", default="runs/report", help="site folder (default runs/report; replaced whole)")
    p.add_argument("--reference", default=None, metavar="LABEL",
                   help="row label the paired FID differences are taken against (default: each experiment's "
                        "teacher, the row rFID is measured against)")
    p.add_argument("--cache-dir", default=None, help="cache of the rows' image features (default FLEXBENCH_CACHE): "
                                                     "the paired differences are computed from them")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from bench.store import ResultStore, peek_meta
    from reports import site

    store_path = Path(args.store)
    if not store_path.is_file():
        raise UserError(f"results store {store_path} does not exist: give the --store file that flexbench demo / "
                        "experiment / search / ablation wrote (default runs/results.sqlite)")
    peek_meta(store_path, None)   # a corrupted or foreign file: one line, before anything is opened for writing
    t0 = time.perf_counter()
    with ResultStore(store_path) as store:
        written = site.write(store, store_path, args.out, args.reference, args.cache_dir)
    if written.empty:
        raise UserError(f"results store {store_path} holds no results: fill it first (e.g. flexbench demo --store "
                        f"{store_path}); {written.index} says so")
    print(f"wrote {written.index}: {written.pages} pages from {store_path} ({time.perf_counter() - t0:.1f} s)")
    return 0
