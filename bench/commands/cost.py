"""``flexbench macs`` and ``flexbench latency``: cost of each step type, next to the paper's numbers.

    flexbench macs --preset all --csv runs/costs --plot runs/costs/fig_b1.png
    flexbench latency --preset ddpm-cifar10 --batch 16 --threads 2 --branches 1,2,3 --plan uniform:20:5:1
"""
from __future__ import annotations

from pathlib import Path

from baselines.deepcache import uniform_plan
from flexiffusion.errors import UserError
from flexiffusion.io import atomic_write_json

from bench.cost.counting import COMPLETE, CONVENTIONS, PAPER, G
from bench.cost.export import plot_branches, write_csv
from bench.cost.macs import preset_table


def register(subparsers) -> None:
    p = subparsers.add_parser("macs", help="MACs per step type (full, partial(b), null) in both conventions",
                              description="Per-step MACs of each preset in the paper convention (fvcore default, "
                                          "no attention matmuls, batch 1, U-Net only) and the complete one (with "
                                          "attention, CFG doubling, text encoder and decoder), next to the paper.")
    p.add_argument("--model", "--preset", dest="preset", default="all",
                   help="model name(s), comma-separated, or 'all' (default); the real architecture, random weights")
    p.add_argument("--csv", metavar="DIR", help="write macs.csv (every preset) and macs-<preset>.csv into DIR")
    p.add_argument("--plot", metavar="PNG", help="write the MACs-against-branch figure (paper Fig. B.1)")
    p.add_argument("--refresh", action="store_true", help="re-measure instead of reading the disk cache")
    p.add_argument("--cache", metavar="DIR", help="cache root (default $FLEXBENCH_CACHE; tables go to its macs/)")
    p.set_defaults(func=run_macs)

    q = subparsers.add_parser("latency", help="per-step latency of full / partial(b) steps and of whole plans",
                              description="Median and IQR of the native forward, a full step and partial(b) steps "
                                          "(and optionally whole plans) after warm-up, with raw values kept.")
    q.add_argument("--model", "--preset", dest="preset", required=True,
                   help="model name (its real architecture with random weights; see flexbench macs)")
    q.add_argument("--batch", type=int, default=16, help="images per call (default 16)")
    q.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    q.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    q.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    q.add_argument("--branches", default=None, help="comma-separated partial branches to time (default: all; "
                                                    "'none' for none)")
    q.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    q.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    q.add_argument("--no-guidance", action="store_true", help="do not double the batch for classifier-free guidance")
    q.add_argument("--plan", action="append", default=[], metavar="SPEC",
                   help="also time sampling with a plan: full:N, uniform:N:INTERVAL:BRANCH or a plan JSON file "
                        "(repeatable)")
    q.add_argument("--scheduler", default="ddim", help="scheduler of the plan runs (default ddim)")
    q.add_argument("--json", metavar="PATH", help="write the full report (raw values, environment) as JSON")
    q.set_defaults(func=run_latency)

    f = subparsers.add_parser("cost-figures", help="engine overhead and wall-clock vs MAC speedup of a DeepCache-like"
                                                   " plan (the cost issue's two figures)",
                              description="Interleaved timing of the native forward vs a full step through the step "
                                          "engine, and of uniform plans vs the all-full plan through the sampler.")
    f.add_argument("--model", "--preset", dest="preset", default="ddpm-cifar10",
                   help="model name (default ddpm-cifar10; real architecture, random weights)")
    f.add_argument("--batch", type=int, default=16, help="images per call (default 16)")
    f.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    f.add_argument("--steps", type=int, default=20, help="plan length (default 20)")
    f.add_argument("--interval", type=int, default=5, help="full step every INTERVAL steps (default 5)")
    f.add_argument("--branches", default="1,2", help="partial branches of the plans (default 1,2)")
    f.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    f.add_argument("--warmup", type=int, default=1, help="untimed rounds (default 1)")
    f.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    f.add_argument("--json", metavar="PATH", help="write the figures and raw timings as JSON")
    f.set_defaults(func=run_figures)


# ---- macs -------------------------------------------------------------------------------------------------------


def cost_preset(model: str) -> str:
    """The cost preset (real architecture, random weights) of a model name of the vocabulary."""
    from bench.models.catalog import get_model
    from bench.presets import get_preset

    entry = get_model(model)
    if entry.cost_preset is None:
        raise UserError(f"model {model!r} is a random code-path stand-in with no real architecture to price: name "
                        f"a paper or embedded model (e.g. {entry.stand_in or 'embedded'})")
    return get_preset(entry.cost_preset).name


def _preset_list(name: str) -> list[str]:
    from bench.presets import preset_names

    if name == "all":
        return preset_names()
    return [cost_preset(n.strip()) for n in name.split(",")]


def run_macs(args) -> int:
    from tqdm.auto import tqdm

    from bench.presets import get_preset

    names = _preset_list(args.preset)
    tables = []
    for name in tqdm(names, desc="presets", disable=len(names) < 2, leave=False):
        tables.append(preset_table(name, cache=args.cache, refresh=args.refresh, progress=True))
    for table in tables:
        print(format_table(table, get_preset(table.preset)))
    if args.csv:
        print(f"wrote {write_csv(tables, Path(args.csv) / 'macs.csv')}")
        for table in tables:
            write_csv([table], Path(args.csv) / f"macs-{table.preset}.csv")
        print(f"wrote macs-<preset>.csv for {', '.join(t.preset for t in tables)} in {args.csv}")
    if args.plot:
        print(f"wrote {plot_branches(tables, args.plot)}")
    return 0


def format_table(table, preset) -> str:
    """Per-step MACs of one preset, both conventions side by side, with the paper's full-step figure."""
    full_p = table.unet_macs("full", None, PAPER) / G
    lines = [f"{preset.name}: {preset.title}  (B = {table.num_branches} branches)"]
    if preset.paper_macs_g:
        gap = 100 * (full_p / preset.paper_macs_g - 1)
        lines.append(f"  paper: {preset.paper_macs_g:g} G per full step; measured (paper convention) {full_p:.4f} G "
                     f"({gap:+.2f}%)")
    guided = " x2 for classifier-free guidance," if table.guidance else ""
    lines.append(f"  paper convention = fvcore default, batch 1, U-Net only, no attention matmuls; complete = with "
                 f"attention,{guided} per image")
    lines.append(f"  {'step':<14}{'paper G':>12}{'fraction':>10}{'complete G':>14}{'fraction':>10}")
    steps = [("null", None)] + [("partial", b) for b in range(1, table.num_branches + 1)] + [("full", None)]
    full = {c: table.unet_macs("full", None, c) for c in CONVENTIONS}
    for step, b in steps:
        p, c = table.unet_macs(step, b, PAPER), table.unet_macs(step, b, COMPLETE)
        label = f"partial({b})" if step == "partial" else step
        lines.append(f"  {label:<14}{p / G:>12.4f}{p / full[PAPER]:>10.3f}{c / G:>14.4f}{c / full[COMPLETE]:>10.3f}")
    for kind, per in (("text_encoder", "per prompt"), ("decoder", "per image")):
        m = table.part_macs(kind)
        if m is not None:
            lines.append(f"  {kind:<14}{'':>12}{'':>10}{m / G:>14.4f}  ({per}, complete convention)")
    return "\n".join(lines)


# ---- latency ----------------------------------------------------------------------------------------------------


def parse_branches(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise UserError(f"malformed --branches {text!r}: use e.g. '1,2,3' or 'none'") from None


def parse_plan(spec: str):
    """``full:N``, ``uniform:N:INTERVAL:BRANCH`` or the path of a plan JSON file."""
    from flexiffusion.schedule import Plan

    parts = spec.split(":")
    try:
        if parts[0] == "full" and len(parts) == 2:
            return Plan.full(int(parts[1]))
        if parts[0] == "uniform" and len(parts) == 4:
            return uniform_plan(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        raise UserError(f"malformed plan spec {spec!r}: use full:N or uniform:N:INTERVAL:BRANCH") from None
    path = Path(spec)
    if path.is_file():
        return Plan.from_json(path.read_text())
    raise UserError(f"malformed plan spec {spec!r}: use full:N, uniform:N:INTERVAL:BRANCH or a plan JSON file")


def run_latency(args) -> int:
    from flexiffusion.devices import resolve_device

    from bench.cost.cases import LatencyCase

    args.preset = cost_preset(args.preset)
    resolve_device(args.device)
    from bench.cost.plan_latency import measure_plans
    from bench.cost.step_latency import engine_overhead, measure_steps
    from bench.cost.schedule_cost import CostModel

    case = LatencyCase(args.preset, batch_size=args.batch, threads=args.threads, device=args.device,
                       dtype=args.dtype, warmup=args.warmup, repeats=args.repeats,
                       branches=parse_branches(args.branches), guidance=False if args.no_guidance else None)
    plans = [parse_plan(s) for s in args.plan]
    case.validate()
    cost = CostModel.for_preset(args.preset)
    report = measure_steps(case, progress=True)
    env = report.environment
    print(f"{args.preset}: batch {case.batch_size} (U-Net batch {env['unet_batch']}), {env['threads']} threads, "
          f"{env['device']} ({env['device_name']}), torch {env['torch']}, diffusers {env['diffusers']}")
    print(f"  {'step':<12}{'median ms':>11}{'IQR ms':>9}{'ms/image':>10}{'/ full':>8}{'MACs /full':>12}")
    full = report.get("full").median
    for m in report.measurements:
        label = f"partial({m.branch})" if m.name == "partial" else m.name
        macs = (cost.step_macs[m.branch] if m.name == "partial" else cost.full_macs) / cost.full_macs
        print(f"  {label:<12}{1e3 * m.median:>11.2f}{1e3 * m.iqr:>9.2f}{1e3 * m.per_image:>10.3f}"
              f"{m.median / full:>8.3f}{macs:>12.3f}")
    if case.native:
        print(f"  engine overhead on a full step: {100 * engine_overhead(report):+.2f}% (median of paired rounds; "
              f"ratio of medians {100 * engine_overhead(report, paired=False):+.2f}%)")
    result = report.to_dict()
    if plans:
        for plan in plans:
            plan.validate(cost.num_branches)
        preport = measure_plans(case, plans, args.scheduler)
        ref = next((m for p, m in zip(plans, preport.measurements) if p.nfe == len(p) and not p.branches), None)
        print(f"  {'plan':<24}{'steps':>6}{'NFE':>5}{'median s':>10}{'IQR s':>8}{'s/image':>9}{'avg MACs G':>12}"
              f"{'MAC x':>7}{'wall x':>8}")
        for plan, m in zip(plans, preport.measurements):
            c = cost.cost(plan)
            wall = f"{ref.median / m.median * len(plan) / ref.calls:>8.2f}" if ref is not None else f"{'-':>8}"
            print(f"  {m.name[5:]:<24}{len(plan):>6}{plan.nfe:>5}{m.median:>10.2f}{m.iqr:>8.2f}{m.per_image:>9.3f}"
                  f"{c.avg_macs_g:>12.4f}{c.speedup:>7.2f}{wall}")
        result["plans"] = preport.to_dict()
    if args.json:
        print(f"wrote {atomic_write_json(args.json, result, indent=1, sort_keys=False, default=str)}")
    return 0


def run_figures(args) -> int:
    from flexiffusion.devices import resolve_device

    from bench.evaluation.cost_figures import cost_figures, format_figures

    args.preset = cost_preset(args.preset)
    resolve_device(args.device)
    branches = parse_branches(args.branches) or ()
    if not branches:
        raise UserError("cost-figures needs at least one branch (--branches 1,2)")
    if args.steps < 1 or args.interval < 1:
        raise UserError(f"need --steps >= 1 and --interval >= 1, got {args.steps} and {args.interval}")
    fig = cost_figures(args.preset, args.batch, args.threads, args.steps, args.interval, branches, args.repeats,
                       args.warmup, args.device, progress=True)
    print(format_figures(fig))
    if args.json:
        print(f"wrote {atomic_write_json(args.json, fig, indent=1, sort_keys=False, default=str)}")
    return 0
