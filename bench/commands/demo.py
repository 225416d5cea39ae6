"""``flexbench demo``: the suite's main job on the embedded default.

The 100-step DDIM teacher against a DeepCache-like plan (a full step every ``--interval`` steps, partial steps
at a shallow ``--branch`` in between), both unconditional, the same seeds: NFE, avg MACs (paper convention),
speed-up, measured latency, FID / IS / precision / recall against the real digits and rFID against the teacher.
Teacher images, their features and the real-data statistics are cached, so a second run only samples the
candidate. The rows, a sample grid (same seeds, one row per plan) and the plans as step-type strips are written
as a self-contained HTML report (``--report``, default ``demo-report/index.html``).
"""
from __future__ import annotations

from baselines.deepcache import uniform_plan
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan


def _table(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows).set_index("plan")
    return df.to_string(float_format=lambda v: f"{v:.3f}")


def run(args) -> int:
    from flexiffusion.engine import StepEngine
    from flexiffusion.io import atomic_write_json
    from flexiffusion.threads import num_threads

    from bench.models import load_model

    if args.n < 2:
        raise UserError(f"--n {args.n}: FID needs at least 2 images (1000 for the paper's protocol)")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: need at least 1 thread")
    teacher = Plan.full(args.steps, name="teacher (DDIM)")
    candidate = uniform_plan(args.steps, args.interval, args.branch,
                             name=f"uniform N={args.interval} b={args.branch}")
    bundle = load_model("embedded", device=args.device)
    for plan in (teacher, candidate):
        plan.validate(grid_length=args.steps)
    candidate.validate(StepEngine(bundle.unet).num_branches)
    seeds = list(range(args.seed0, args.seed0 + args.n))
    with num_threads(args.threads):  # the caller's thread count is restored afterwards
        rows, environment, samples = _evaluate_or_reuse(args, bundle, (teacher, candidate), seeds)
    print()
    print(f"embedded digits model, {args.steps}-step DDIM, {args.n} images (seeds {seeds[0]}-{seeds[-1]}), "
          f"MACs: paper convention (U-Net only, batch 1, attention matmuls not counted)")
    print(_table(rows))
    if args.out:
        out = atomic_write_json(args.out, {"rows": rows, "environment": environment}, sort_keys=False, default=str)
        print(f"wrote {out}")
    if args.report:
        print(f"wrote {_report(args, bundle, rows, environment, samples, (teacher, candidate), seeds)}")
    return 0


def _report(args, bundle, rows, environment, samples, plans, seeds):
    """The HTML report: the table (provenance per row), the sample grid and the schedule strips."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from reports import figures_samples, html

    provenance = [{"model": "embedded", "weights": bundle.weights_id, "plan digest": plan.digest(), "n": args.n,
                   "seeds": f"{seeds[0]}-{seeds[-1]}", "device": str(bundle.device), "threads": args.threads,
                   "torch": environment.get("torch")} for plan in plans]
    with tempfile.TemporaryDirectory() as tmp:
        grid = figures_samples.sample_grid(samples, Path(tmp) / "samples.png", seeds=seeds)
        strips = figures_samples.schedule_strips(list(plans), Path(tmp) / "schedules.png")
        report = html.Report("flexbench demo: embedded digits model", [
            html.Table.from_dataframe("results", pd.DataFrame(rows).set_index("plan"), provenance,
                                      note=f"{args.steps}-step DDIM, {args.n} images per plan; FID / IS / precision "
                                           "/ recall against all 1797 real digits (digits-cnn extractor), rFID "
                                           "against the teacher's images from the same seeds; MACs in the "
                                           "paper's convention."),
            html.Figure("samples (same seeds, one row per plan)", grid),
            html.Figure("schedules (step types in sampling order)", strips)])
        return html.write_report(report, args.report)


METRICS = ("NFE", "avg MACs (G)", "speedup (MACs)", "latency (ms/img)", "speedup (wall)", "FID", "rFID", "IS",
           "precision", "recall", "n")


def _evaluate_or_reuse(args, bundle, plans, seeds):
    """Rows from the results store when this exact run is already there (only the sample grid's few images are
    sampled again), else evaluated and stored as tidy rows under one key."""
    from bench.cache import cache_dir, stable_hash
    from bench.generate import generate_images
    from bench.store import ResultStore

    key = "demo/" + stable_hash({"weights": bundle.weights_id, "plans": [p.tokens() for p in plans],
                                 "steps": args.steps, "seeds": [seeds[0], seeds[-1]], "device": str(bundle.device),
                                 "threads": args.threads, "latency": [args.latency_batch, args.latency_repeats]})
    path = args.store or cache_dir(args.cache_dir) / "results.sqlite"
    with ResultStore(path) as store:
        stored = store.get(key)
        if stored is None:
            rows, environment, samples = _evaluate(args, bundle, plans, seeds)
            store.put(key, [{"experiment": "demo", "method": r["plan"], "model": "embedded",
                             "weights": bundle.weights_id, "plan_digest": p.digest(), "plan": p.to_dict(),
                             "scheduler": "ddim", "grid": args.steps, "metric": m, "value": r[m], "n_images": args.n,
                             "seeds": f"{seeds[0]}-{seeds[-1]}", "extra": {"environment": environment}}
                            for p, r in zip(plans, rows) for m in METRICS])
            return rows, environment, samples
    print(f"reusing the stored results (key {key} in {path}); sampling only the grid's images")
    rows = []
    for plan in plans:
        mine = {r["metric"]: r["value"] for r in stored if r["method"] == plan.name}
        rows.append({"plan": plan.name, **{m: int(mine[m]) if m in ("NFE", "n") else mine[m] for m in METRICS}})
    environment = stored[0]["extra"]["environment"]
    samples = {p.name: generate_images(bundle, p, seeds[:8], batch_size=8, desc=p.name) for p in plans}
    return rows, environment, samples


def _evaluate(args, bundle, plans, seeds) -> tuple[list[dict], dict]:
    """Rows of the demo table (teacher first) and the environment they were measured in."""
    from bench.cost.cases import LatencyCase
    from bench.cost.plan_latency import measure_plans
    from bench.cost.schedule_cost import plan_cost
    from bench.quality.sources import digits_uint8
    from bench.evaluation import relative_fid
    from bench.generate import generate_images
    from bench.quality.fidelity import fidelity

    teacher = plans[0]
    rfid = relative_fid(bundle, seeds, args.steps, scheduler="ddim", gen_batch_size=args.batch_size, progress=True,
                        cache_dir=args.cache_dir)
    real = digits_uint8("all")  # all 1797 real digits: the reference set, its statistics cached
    print(f"latency: timing both plans on the embedded architecture (batch {args.latency_batch}) ...")
    latency = measure_plans(LatencyCase("embedded", batch_size=args.latency_batch, threads=args.threads,
                                        device=str(bundle.device), warmup=1, repeats=args.latency_repeats,
                                        guidance=False),  # the demo samples unconditionally
                            list(plans))
    rows, samples = [], {}
    for plan, lat in zip(plans, latency.measurements):
        images = rfid.teacher_images().tensor() if plan is teacher else generate_images(
            bundle, plan, seeds, batch_size=args.batch_size, desc=plan.name)
        quality = fidelity(images, real, ("fid", "isc", "prc"), extractor="digits-cnn",
                           reference_source="digits-all", cache_dir=args.cache_dir)
        relative = rfid.score_images(images)
        samples[plan.name] = images[:8]
        cost = plan_cost(plan, "embedded")
        rows.append({"plan": plan.name, "NFE": plan.nfe, "avg MACs (G)": cost.avg_macs_g,
                     "speedup (MACs)": cost.speedup, "latency (ms/img)": 1e3 * lat.per_image,
                     "speedup (wall)": None, "FID": quality["fid"], "rFID": relative["rfid"],
                     "IS": quality["isc_mean"], "precision": quality["precision"], "recall": quality["recall"],
                     "n": args.n})
    for r in rows:
        r["speedup (wall)"] = rows[0]["latency (ms/img)"] / r["latency (ms/img)"]
    return rows, latency.environment, samples


def register(sub) -> None:
    p = sub.add_parser("demo", help="main job: teacher vs a cached plan on the embedded model (NFE, MACs, "
                                    "latency, FID, rFID, IS, precision, recall)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--n", type=int, default=1000, help="images per plan (default 1000)")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps of the base grid (default 100)")
    p.add_argument("--interval", type=int, default=5, help="full step every N steps (default 5)")
    p.add_argument("--branch", type=int, default=3, help="skip branch of the partial steps (default 3)")
    p.add_argument("--seed0", type=int, default=0, help="first seed (seeds seed0 .. seed0+n-1)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--latency-batch", type=int, default=16)
    p.add_argument("--latency-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None, help="cache of teacher images / features / statistics")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--store", default=None, help="results store (default CACHE/results.sqlite); a run already "
                                                 "stored is reused, not recomputed")
    p.add_argument("--report", default="demo-report", help="HTML report directory (default demo-report; '' for none)")
    p.set_defaults(func=run)
