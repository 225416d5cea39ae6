"""GPU check: one short script that measures what only a GPU can show, and prints ONE markdown table.

    python benchmarks/gpu_check.py [--quick] [--out FILE.md] [--budget-s S] [--threads N] [--cpu]

Rows (docs/gpu.md explains each):

(a) parity -- the same plans on the same seeds, final latents on CUDA against the CPU: the embedded model (shipped
    weights, ``load_model("embedded")`` through ``bench.generate``) and the DDPM CIFAR-10 architecture with random
    weights (``bench.presets``, through ``flexiffusion.sampler``); plans: the all-full teacher, DeepCache (uniform,
    interval 5, branch 3), a Flexiffusion-like plan with null steps, and DeepCache with DDIM eta = 1 (per-sample step
    noise drawn on the CPU).  fp32 with TF32 off (``torch.backends.cuda.matmul.allow_tf32 = False``,
    ``torch.backends.cudnn.allow_tf32 = False``).  Pass: max |CUDA - CPU| <= max(1e-3, 10 x the CPU's own spread on
    the same plan, batch 1 vs batch min(8, seeds), measured in the same run).  Also (a') MACs counted by fvcore on a
    CUDA copy equal the CPU count.
(b) latency -- per-step latency of a full step and partial(1), (3), (6) on the paper's architectures (random weights)
    with the device synchronised around every timed call (``bench.cost.latency.measure_steps``), against MACs:
    wall-clock speed-up of each partial step over the full step vs its MAC speed-up (paper convention).
(c) demo -- ``flexbench demo --device cuda`` (the main job) in a subprocess on a fresh store and cache: wall time.
(d) search -- ``flexbench search --preset embedded-demo --device cuda``: wall time and the best plan.

Without CUDA the script still runs and prints the same table with "no CUDA device: GPU rows not measured": (a) as
CPU against CPU (another thread count, same batch: NOT a GPU check; 1 thread by default), (b) on the CPU at small
batches, (c) skipped under --quick (minutes on a CPU), (d) a tiny search.  A lent GPU session has 15 minutes of
device time in all: with CUDA every section checks the time left (``--budget-s``, default 420 s) and skips what
would not fit.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TOLERANCE = 1e-3          # max |CUDA - CPU| of final latents (values of order 1), fp32 without TF32, unless the
                          # CPU's own batch-1-vs-8 spread on the plan is larger: then 10 x that spread
BRANCHES = (1, 3, 6)      # partial steps timed: DeepCache's DDPM branch (our 3), LDM's (our 1), the search spaces'
# (preset, batch) on CUDA: the paper gives no batch size for its s/image (RTX 3090); these fit a 24 GB card in fp32.
# Guided presets (LDM-4-G, SD) run the U-Net at twice the batch (classifier-free guidance, batched).
CUDA_CASES = (("ddpm-cifar10", 128), ("ddpm-bedroom", 8), ("ldm-4-g", 8), ("sd-v1.5", 2))
CPU_CASES_QUICK = (("embedded", 16), ("ddpm-cifar10", 2))
CPU_CASES = CPU_CASES_QUICK + (("ldm-4-g", 1), ("ddpm-bedroom", 1), ("sd-v1.5", 1))
DEMO_QUICK = ["--n", "100", "--search-images", "16", "--search-iterations", "1", "--search-initial", "4",
              "--ad-images", "32", "--ad-population", "4", "--ad-epochs", "1", "--bootstrap", "20"]
SEARCH_TINY = ["--images", "8", "--iterations", "1", "--initial", "2", "--children", "2", "--parents", "2",
               "--batch-size", "8"]


@dataclass
class Row:
    check: str
    case: str
    device: str
    measured: str
    criterion: str
    result: str


class Clock:
    """Time left of the script's budget (None: unlimited)."""

    def __init__(self, budget_s: float | None):
        self.t0, self.budget = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.elapsed()

    def fits(self, need_s: float) -> bool:
        return self.left() >= need_s


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_s(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


# ---- (a) parity ---------------------------------------------------------------------------------------------------


def flex_like(steps: int):
    """A Flexiffusion-like plan: segments of full, partial and null steps (about 60 % of the steps evaluate)."""
    from flexiffusion.schedule import Plan

    pattern = ["f", "p3", "n", "p1", "n", "f", "n", "p2", "p2", "n"]
    return Plan.from_tokens([pattern[i % len(pattern)] for i in range(steps)], name=f"flex-like-{steps}")


def plans(steps: int):
    from baselines.deepcache import uniform_plan
    from flexiffusion.schedule import Plan

    dc = uniform_plan(steps, 5, 3)
    return [("teacher", Plan.full(steps, name="teacher"), 0.0), ("DeepCache N5 b3", dc, 0.0),
            ("flex-like (null steps)", flex_like(steps), 0.0), ("DeepCache N5 b3, eta 1", dc, 1.0)]


class PresetRunner:
    """Final latents of a preset with random weights (the shared CPU U-Net, or one private copy per device)."""

    def __init__(self, name: str):
        from bench.presets import get_preset

        self.preset = get_preset(name)
        self.copies: dict = {}

    def unet(self, device: torch.device):
        shared = self.preset.build_unet()
        if device.type == "cpu":
            return shared
        if str(device) not in self.copies:
            self.copies[str(device)] = copy.deepcopy(shared).to(device)
        return self.copies[str(device)]

    def latents(self, plan, seeds, device, batch: int, eta: float = 0.0) -> torch.Tensor:
        from bench.generate import step_kwargs
        from flexiffusion.denoisers import Denoiser
        from flexiffusion.engine import StepEngine
        from flexiffusion.sampler import sample
        from flexiffusion.schedulers import make_scheduler_for_grid
        from flexiffusion.seeds import noise_for_seeds

        unet = self.unet(device)
        engine = StepEngine.attach(unet)
        try:
            out = []
            for lo in range(0, len(seeds), batch):
                chunk = seeds[lo:lo + batch]
                sched = make_scheduler_for_grid("ddim", dict(self.preset.scheduler_config), len(plan), device=device)
                noise = noise_for_seeds(chunk, self.preset.sample_shape, device=device)
                state = sample(Denoiser(unet, engine), sched, plan, noise, step_kwargs=step_kwargs(sched, chunk, eta))
                out.append(state.latents.cpu())
            return torch.cat(out)
        finally:
            engine.detach()


def parity(args, cuda: bool, clock: Clock) -> list[Row]:
    """Final latents of the same plans and seeds on two sides.  CUDA: CPU (batch 8) against CUDA (batch 8).  No
    CUDA: CPU N threads against CPU 1 thread (batch 8): NOT a GPU check.  Either way the CPU's own spread on the
    same plan (batch 1 against batch 8, or all seeds when fewer: other GEMM / convolution blocking) is measured too,
    and the criterion is
    max(TOLERANCE, 10 x that spread): the random-weight CIFAR-10 U-Net amplifies rounding differences along its
    trajectory (1e-6 after one step, ~1e-2 after 20 all-full steps on the CPU alone)."""
    from bench.generate import generate_latents
    from bench.models import load_model
    from flexiffusion.devices import resolve_device, strict_float32
    from flexiffusion.threads import num_threads

    rows: list[Row] = []
    threads = args.threads or torch.get_num_threads()
    cpu = torch.device("cpu")
    ref = dict(device=cpu, threads=threads, batch=8)
    spread = dict(device=cpu, threads=threads, batch=1)
    if cuda:
        test = dict(device=resolve_device("cuda"), threads=threads, batch=8)
        where = "cuda vs cpu"
    else:   # NOT a GPU check: the same CPU at another thread count
        other = 1 if threads > 1 else 2
        test = dict(device=cpu, threads=other, batch=8)
        where = f"cpu {other} vs {threads} thread(s) (not a GPU check)"
    # (steps, seeds): the CPU-only quick run must fit a few minutes on 2 cores; the chaotic random-weight CIFAR-10
    # trajectory stays short everywhere (its CPU spread reaches ~1e-2 at 20 all-full steps)
    if cuda:
        (emb_steps, n_emb), (cif_steps, n_cif) = ((100, 8), (20, 4)) if args.quick else ((100, 16), (20, 8))
    else:
        (emb_steps, n_emb), (cif_steps, n_cif) = ((50, 4), (10, 2)) if args.quick else ((100, 8), (20, 4))
    emb_seeds, cif_seeds = list(range(n_emb)), list(range(n_cif))
    bundles = {}

    def embedded(side, plan, eta):
        key = str(side["device"])
        if key not in bundles:
            bundles[key] = load_model("embedded", device=side["device"])
        with num_threads(side["threads"]):
            return generate_latents(bundles[key], plan, emb_seeds, eta=eta, batch_size=side["batch"],
                                    progress=False)

    cifar = PresetRunner("ddpm-cifar10")

    def preset(side, plan, eta):
        with num_threads(side["threads"]):
            return cifar.latents(plan, cif_seeds, side["device"], side["batch"], eta)

    models = [("embedded", f"{emb_steps} DDIM steps, seeds 0-{len(emb_seeds) - 1}", emb_steps, embedded,
               min(8, len(emb_seeds))),
              ("ddpm-cifar10 (random weights)", f"{cif_steps} DDIM steps, seeds 0-{len(cif_seeds) - 1}",
               cif_steps, preset, min(8, len(cif_seeds)))]
    with strict_float32():
        for model, setting, steps, run, batch in models:
            teacher = None
            for label, plan, eta in plans(steps):
                case = f"{model}: {label}, {setting}, NFE {plan.nfe}"
                if not clock.fits(20):
                    rows.append(Row("(a) parity", case, where, "not measured", "", "skipped: time"))
                    continue
                t0 = time.perf_counter()
                a, b, c = run(ref, plan, eta), run(test, plan, eta), run(spread, plan, eta)
                diff, own = (a - b).abs().max().item(), (a - c).abs().max().item()
                if label == "teacher":
                    teacher = a
                effect = "" if teacher is None or label == "teacher" else \
                    f"; plan vs teacher {(a - teacher).abs().max().item():.3g}"
                limit = max(TOLERANCE, 10 * own)
                ok = bool(torch.isfinite(a - b).all()) and diff <= limit
                rows.append(Row("(a) parity", case, where,
                                f"max abs {diff:.3g} (mean {(a - b).abs().mean().item():.2g}; max abs latent "
                                f"{a.abs().max().item():.3g}{effect})",
                                f"<= {limit:.3g} = max({TOLERANCE:g}, 10 x CPU batch-1-vs-{batch} spread "
                                f"{own:.3g}); fp32, TF32 off", "pass" if ok else "FAIL"))
                log(f"parity {model} {label}: {diff:.3g} (spread {own:.3g}; {time.perf_counter() - t0:.1f} s)")
    if cuda:
        rows.extend(macs_on_device(test["device"]))
    return rows


def macs_on_device(device) -> list[Row]:
    """fvcore MACs of a full and a partial(3) step traced on a copy on ``device`` against the CPU count."""
    from bench.cost.counting import count_call
    from bench.presets import build
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    rows = []
    for name in ("embedded", "ddpm-cifar10"):
        built = build(name)
        counts = []
        for dev in (torch.device("cpu"), device):
            unet = copy.deepcopy(built.unet).to(dev)   # the shared preset U-Net is never moved or hooked here
            kwargs = {k: v.to(dev) for k, v in built.kwargs.items()}
            engine = StepEngine.attach(unet)
            try:
                side = []
                for step in (Step.full(), Step.partial(3)):
                    with engine.step(step):
                        side.append(count_call(unet, (built.sample.to(dev), built.timestep.to(dev)), kwargs,
                                               static={"return_dict": False}).triple())
                counts.append(side)
            finally:
                engine.detach()
        same = counts[0] == counts[1]
        rows.append(Row("(a') MACs", f"{name}: full, partial(3), batch 1 (fvcore total, attention, cdist)",
                        f"{device.type} vs cpu", f"cpu {counts[0]}" + ("" if same else f"; {device} {counts[1]}"),
                        "identical counts", "pass" if same else "FAIL"))
    return rows


# ---- (b) latency ------------------------------------------------------------------------------------------------


def count_macs(name: str, branches=BRANCHES) -> dict:
    """Paper-convention MACs of a full step and partial(b), batch 1, counted on the CPU (a cached MACs table when
    ``$FLEXBENCH_CACHE`` holds one)."""
    from bench.cache import Cache
    from bench.cost.counting import count_call
    from bench.cost.macs import CACHE_STAGE, cache_key
    from bench.cost.table import MacsTable
    from bench.presets import build
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    data = Cache().load(CACHE_STAGE, cache_key(name), name, fmt="json")
    if data is not None:
        table = MacsTable.from_dict(data)
        return {"full": table.unet_macs("full"), **{b: table.unet_macs("partial", b) for b in branches}}
    built = build(name)
    engine = StepEngine.attach(built.unet)
    out = {}
    try:
        for step in [Step.full()] + [Step.partial(b) for b in branches]:
            with engine.step(step):
                c = count_call(built.unet, (built.sample, built.timestep), built.kwargs, static={"return_dict": False})
            out["full" if step.kind == "full" else step.branch] = c.paper
    finally:
        engine.detach()
    return out


def _count_worker(name: str) -> dict:
    torch.set_num_threads(2)
    return count_macs(name)


def latency(args, cuda: bool, clock: Clock, macs_futures: dict) -> list[Row]:
    from bench.cost.latency import LatencyCase, engine_overhead, measure_steps
    from bench.presets import clear_cache

    rows: list[Row] = []
    if cuda:
        cases = CUDA_CASES
        warmup, repeats = (2, 5) if args.quick else (3, 10)
        device, threads = f"cuda:{torch.cuda.current_device()}", None
    else:
        cases = CPU_CASES_QUICK if args.quick else CPU_CASES
        warmup, repeats = (1, 3)
        device, threads = "cpu", args.threads or torch.get_num_threads()
    for name, batch in cases:
        if not clock.fits(45):
            rows.append(Row("(b) latency", f"{name} batch {batch}", device, "not measured", "", "skipped: time"))
            continue
        t0 = time.perf_counter()
        case = LatencyCase(name, batch_size=batch, threads=threads, device=device, warmup=warmup, repeats=repeats,
                           branches=BRANCHES)
        report = measure_steps(case)
        macs = macs_futures[name].result() if name in macs_futures else count_macs(name)
        env = report.environment
        full = report.get("full")
        where = f"{device} ({env['device_name']})" + (f", {env['threads']} threads" if not cuda else "")
        unet_batch = env["unet_batch"]
        setting = f"batch {batch}" + (f" (U-Net batch {unet_batch}, CFG)" if unet_batch != batch else "")
        rows.append(Row("(b) latency", f"{name} {setting}: full step", where,
                        f"{fmt_s(full.median)} per step (IQR {fmt_s(full.iqr)}; native forward "
                        f"{fmt_s(report.get('native').median)}, engine overhead "
                        f"{100 * engine_overhead(report):+.1f} %)",
                        f"{macs['full'] / 1e9:.4g} G MACs/image (paper conv.)", f"{warmup}+{repeats} rounds"))
        for b in BRANCHES:
            part = report.get("partial", b)
            wall, mac = full.median / part.median, macs["full"] / macs[b]
            rows.append(Row("(b) latency", f"{name} {setting}: partial({b})", where,
                            f"{fmt_s(part.median)}: wall speed-up x{wall:.2f}", f"MAC speed-up x{mac:.2f}",
                            f"wall/MAC {wall / mac:.2f}"))
        log(f"latency {name} batch {batch}: {time.perf_counter() - t0:.1f} s")
        del report
        if cuda:
            torch.cuda.empty_cache()
        if name in ("sd-v1.5", "ddpm-bedroom", "ldm-4-g"):
            clear_cache()   # the shared CPU U-Nets of the big presets
    return rows


# ---- (c) demo, (d) search -----------------------------------------------------------------------------------------


def flexbench(argv: list[str], timeout_s: float, env: dict) -> tuple[int | None, float, str]:
    """``flexbench ARGV`` in a subprocess: (exit code or None on timeout, wall seconds, output tail)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=None if timeout_s == float("inf") else max(1.0, timeout_s))
        return p.returncode, time.perf_counter() - t0, (p.stdout + p.stderr)[-2000:]
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return None, time.perf_counter() - t0, out.decode(errors="replace")[-2000:] if isinstance(out, bytes) else ""


def demo(args, cuda: bool, clock: Clock, tmp: Path, env: dict) -> list[Row]:
    device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    settings = DEMO_QUICK if args.quick else []
    case = "flexbench demo " + (" ".join(settings) if settings else "(default settings, --n 1000)")
    if not cuda and args.quick:
        return [Row("(c) demo", case, device, "not run", "", "skipped: the demo takes ~9 min on a 2-core CPU; "
                                                               "run without --quick")]
    need = 60 if args.quick else 180
    if not clock.fits(need):
        return [Row("(c) demo", case, device, "not run", "", f"skipped: {clock.left():.0f} s left of the budget")]
    argv = ["demo", "--device", device, "--store", str(tmp / "demo.sqlite"), "--cache-dir", str(tmp / "demo-cache"),
            "--report", "", *settings]
    if not cuda and args.threads:
        argv += ["--threads", str(args.threads)]
    code, wall, tail = flexbench(argv, clock.left() - 5, env)
    log(f"demo: exit {code}, {wall:.0f} s")
    line = next((ln for ln in tail.splitlines() if ln.startswith("| Flexiffusion")), "")
    measured = f"wall {wall:.0f} s" + (f"; {line[:120]}" if line else "")
    if code is None:
        return [Row("(c) demo", case, device, measured, "exit 0, fresh store and cache", "timeout (budget)")]
    if code != 0:
        print(tail, file=sys.stderr)
    return [Row("(c) demo", case, device, measured, "exit 0, fresh store and cache", "pass" if code == 0 else
                f"FAIL (exit {code})")]


def search(args, cuda: bool, clock: Clock, tmp: Path, env: dict) -> list[Row]:
    device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    settings = [] if cuda else SEARCH_TINY
    case = "flexbench search --preset embedded-demo " + (" ".join(settings) if settings else "(preset settings)")
    if not clock.fits(40):
        return [Row("(d) search", case, device, "not run", "", f"skipped: {clock.left():.0f} s left of the budget")]
    out = tmp / "search-out"
    argv = ["search", "--preset", "embedded-demo", "--device", device, "--store", str(tmp / "search.sqlite"),
            "--cache-dir", str(tmp / "search-cache"), "--out", str(out), "--name", "gpu-check", *settings]
    if not cuda and args.threads:
        argv += ["--threads", str(args.threads)]
    code, wall, tail = flexbench(argv, clock.left() - 5, env)
    log(f"search: exit {code}, {wall:.0f} s")
    measured = f"wall {wall:.0f} s"
    best = out / "best.json"
    if code == 0 and best.is_file():
        plan = json.loads(best.read_text())
        steps = plan.get("steps", [])
        measured += f"; best plan NFE {sum(1 for s in steps if not str(s).startswith('n'))} of {len(steps)} steps"
    if code is None:
        return [Row("(d) search", case, device, measured, "exit 0", "timeout (budget)")]
    if code != 0:
        print(tail, file=sys.stderr)
    return [Row("(d) search", case, device, measured, "exit 0, best.json written",
                "pass" if code == 0 and best.is_file() else f"FAIL (exit {code})")]


# ---- the table --------------------------------------------------------------------------------------------------


def header(cuda: bool, args) -> list[str]:
    from flexiffusion.devices import describe
    from flexiffusion.environment import cpu_count, git_commit

    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [f"# GPU check ({'quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M')}",
             "",
             f"host {platform.node()} ({platform.processor() or platform.machine()}), {cpu_count()} CPUs, "
             f"torch threads {args.threads or torch.get_num_threads()}, load average before {load}; "
             f"torch {torch.__version__}, git {git_commit()}"]
    if cuda:
        d = describe(torch.device("cuda", torch.cuda.current_device()))
        lines.append(f"device {d['device']}: {d['device_name']} (capability {d['cuda_capability']}, "
                     f"{d['cuda_memory_gib']} GiB), CUDA {d['cuda_version']}, cuDNN {d['cudnn_version']}; parity rows "
                     "in fp32 with TF32 off; latency rows with torch's defaults (TF32 matmul "
                     f"{'on' if d['tf32_matmul'] else 'off'}, cuDNN TF32 {'on' if d['tf32_cudnn'] else 'off'})")
    else:
        lines.append("no CUDA device: GPU rows not measured. (a) compares the CPU with itself (another thread "
                     "count, same batch): NOT a GPU check; (b) is CPU latency at small batches.")
    return lines


def table(rows: list[Row]) -> list[str]:
    out = ["| check | case | device | measured | reference / criterion | result |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.check, r.case, r.device, r.measured, r.criterion, r.result]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter settings (CPU: under ~5 min; skips the demo)")
    p.add_argument("--out", default=None, help="also write the markdown here")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting sections when this many seconds are used (default: 420 on CUDA, none on CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's with CUDA, 1 without; parity's other side uses 2)")
    p.add_argument("--cpu", action="store_true", help="ignore CUDA even if present (the CPU-only table)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: a,b,c,d")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if args.threads is None and not cuda:
        args.threads = 1   # a shared CPU: two OpenMP threads spin against other jobs (10x slower at load 4 on 2 cores)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = Clock(args.budget_s if args.budget_s is not None else (420.0 if cuda else None))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    lines = header(cuda, args)
    rows: list[Row] = []
    futures, pool = {}, None
    if cuda and "b" not in skip:   # MACs are counted on the CPU, in parallel with the GPU work
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        names = [n for n, _ in CUDA_CASES]
        pool = ProcessPoolExecutor(max_workers=len(names), mp_context=mp.get_context("spawn"))
        futures = {n: pool.submit(_count_worker, n) for n in names}
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
            tmp = Path(tmp_name)
            env = {**os.environ, "FLEXBENCH_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT) + os.pathsep +
                   os.environ.get("PYTHONPATH", "")}
            sections = {"a": lambda: parity(args, cuda, clock),
                        "b": lambda: latency(args, cuda, clock, futures),
                        "d": lambda: search(args, cuda, clock, tmp, env),
                        "c": lambda: demo(args, cuda, clock, tmp, env)}
            done: dict = {}
            for key, run in sections.items():   # the demo last: it takes what is left of the budget
                if key in skip:
                    done[key] = []
                    continue
                log(f"section ({key}), {clock.elapsed():.0f} s elapsed")
                try:
                    done[key] = run()
                except Exception as exc:   # one failing section must not hide the others' rows
                    import traceback

                    traceback.print_exc()
                    done[key] = [Row(f"({key})", "section failed", "", f"{type(exc).__name__}: {exc}"[:200], "",
                                     "FAIL")]
            rows = done.get("a", []) + done.get("b", []) + done.get("c", []) + done.get("d", [])
    finally:
        if pool is not None:   # counts nobody waits for any more (sections skipped) must not hold the exit
            workers = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for w in workers:
                if w.is_alive():
                    w.terminate()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines += ["", *table(rows), "",
              f"total {clock.elapsed():.0f} s; load average after {load}; (a): max abs difference of final "
              f"latents <= max({TOLERANCE:g}, 10 x the CPU's own spread on the plan: batch 1 vs batch min(8, seeds)); "
              "latency: "
              "median of the timed rounds, device synchronised before the start and after each call; MAC speed-up "
              "= full-step MACs / partial-step MACs (fvcore, paper convention, counted on the CPU at batch 1)."]
    if not cuda:
        lines.append("no CUDA device: GPU rows not measured")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    failed = [r for r in rows if r.result.startswith("FAIL")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
