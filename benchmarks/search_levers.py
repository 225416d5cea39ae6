"""Wall time of each search-evaluation lever on one fixed set of candidates (issue: search cost, part 2).

    python benchmarks/search_levers.py --preset embedded-50 --candidates 4 --images 64 [--levers ...] [--json F]

Each lever evaluates the same candidates (drawn from the preset's space, seeded) on the same images, from noise (no
prefix reuse, so the levers compare on equal work), after its own teacher; reported: seconds per candidate
(sampling + features + distance), the speed-up against the base (eager fp32, one process, ``--threads`` threads,
all of a candidate's images in one call) and the largest change of a fitness value against the base (0 = exact).

Levers: ``batch16`` / ``batch32`` (images per U-Net call), ``threads1`` (one thread), ``ray2x1`` (two Ray actors of
one thread each, candidates in parallel), ``channels_last``, ``bf16`` (autocast) and ``bf16-weights`` (run on
``--bf16-images`` images only where the CPU emulates bfloat16: its seconds are scaled to the image count and said
so), ``compile`` (torch.compile of the U-Net's blocks: compile time cold, i.e. an empty inductor cache, and warm, a
second process reading the on-disk cache, reported apart from the per-candidate time).
Run alone on the machine: the figures are wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

LEVERS = ("base", "batch16", "batch32", "threads1", "ray2x1", "channels_last", "bf16", "bf16-weights", "compile")


def _setting(preset, images, threads, space):
    from bench.evaluation.setting import EvaluationSetting

    return EvaluationSetting.for_images(images, model=preset.model, scheduler=preset.scheduler, grid_length=space.grid,
                                        batch_size=images, threads=threads)


def _measure(setting, plans, cache_dir, executor="local"):
    from bench.evaluation.executors import make_executor

    t0 = time.perf_counter()
    kwargs = {"states": None, "cache_dir": cache_dir}
    if executor == "ray":
        ex = make_executor("ray", setting, actors=2, **kwargs)
        ex.map(plans[:2])   # both actors up, model and teacher built: not timed
    else:
        ex = make_executor("local", setting, **kwargs)
        ex.evaluator
    ready = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = ex.map(plans)
    wall = time.perf_counter() - t0
    ex.close()
    return {"setup_s": ready, "s_per_candidate": wall / len(plans), "fitness": [r["fitness"] for r in rows]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="embedded-50")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--bf16-images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--levers", default=",".join(LEVERS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from bench.evaluation.setting import ExecutionMode
    from bench.search.ablation import draw_candidates
    from bench.search.presets import get_preset
    from bench.search.setup import space_of

    preset = get_preset(args.preset)
    space, _, _ = space_of(preset)
    plans = [space.compile(c) for c in draw_candidates(space, args.candidates, 0)]
    base = _setting(preset, args.images, args.threads, space)
    work = tempfile.mkdtemp(prefix="search-levers-")
    out, ref = [], None
    for lever in [lv for lv in args.levers.split(",") if lv]:
        if lever not in LEVERS:
            print(f"error: unknown lever {lever!r}: choose from {', '.join(LEVERS)}", file=sys.stderr)
            return 2
        s, executor, note = base, "local", ""
        if lever.startswith("batch"):
            s = replace(base, batch_size=int(lever[5:]))
        elif lever == "threads1":
            s = replace(base, threads=1)
        elif lever == "ray2x1":
            s, executor = replace(base, threads=1), "ray"
            plans_here = plans
        elif lever in ("channels_last", "bf16", "bf16-weights", "compile"):
            mode = {"channels_last": ExecutionMode(channels_last=True), "bf16": ExecutionMode(dtype="bf16"),
                    "bf16-weights": ExecutionMode(dtype="bf16-weights"), "compile": ExecutionMode(compile=True)}[lever]
            s = replace(base, mode=mode)
            if lever.startswith("bf16"):
                from bench.evaluation.execution import bf16_native

                if not bf16_native(s.device):
                    s = replace(s, seeds=s.seeds[:args.bf16_images], batch_size=args.bf16_images)
                    note = (f"bf16 emulated on this CPU: measured on {args.bf16_images} images, scaled to "
                            f"{args.images}; fitness change not comparable (other images)")
        if lever == "compile":
            row = _compile_row(s, plans, work)
        else:
            plans_here = plans
            r = _measure(s, plans_here, os.path.join(work, lever), executor)
            scale = args.images / s.n_images
            row = {"lever": lever, "s_per_candidate": r["s_per_candidate"] * scale, "setup_s": r["setup_s"],
                   "fitness": r["fitness"], "note": note}
        if lever == "base":
            ref = row
        if ref is not None and "s_per_candidate" in row:
            row["speedup"] = ref["s_per_candidate"] / row["s_per_candidate"]
            if not note and row.get("fitness"):
                row["max_abs_fitness_change"] = max(abs(a - b) for a, b in zip(ref["fitness"], row["fitness"]))
        out.append(row)
        print(_line(row), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "rows": out}, f, indent=1)
    return 0


def _compile_row(setting, plans, work) -> dict:
    """Compile cold (empty inductor cache) and warm (a second process, same on-disk cache), each in a fresh process:
    time to the first candidate's fitness minus the eager time of that candidate, and the per-candidate time."""
    cache = os.path.join(work, "inductor")
    script = (
        "import json,sys,time\n"
        "from bench.evaluation.evaluator import Evaluator\n"
        "from bench.evaluation.setting import EvaluationSetting\n"
        "from flexiffusion.schedule import Plan\n"
        "d=json.loads(sys.argv[1]); s=EvaluationSetting(**d['setting'])\n"
        "plans=[Plan.from_dict(p) for p in d['plans']]\n"
        "t0=time.perf_counter(); ev=Evaluator(s, states=None, cache_dir=d['cache']).prepare(); t1=time.perf_counter()\n"
        "rows=[ev.evaluate_one(p, reuse=False) for p in plans]; t2=time.perf_counter()\n"
        "print(json.dumps({'prepare_s':t1-t0,'evaluate_s':t2-t1,'fitness':[r['fitness'] for r in rows]}))\n")
    from dataclasses import asdict

    payload = json.dumps({"setting": asdict(setting), "plans": [p.to_dict() for p in plans],
                          "cache": os.path.join(work, "compile-eval")}, default=str)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    runs = []
    for _ in ("cold", "warm"):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", script, payload], env=env, capture_output=True, text=True)
        if p.returncode:
            return {"lever": "compile", "error": p.stderr.strip().splitlines()[-1][:300] if p.stderr else "failed"}
        runs.append({**json.loads(p.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t0})
    cold, warm = runs
    return {"lever": "compile", "s_per_candidate": warm["evaluate_s"] / len(plans), "compile_cold_process_s":
            cold["process_s"], "compile_warm_process_s": warm["process_s"], "fitness": warm["fitness"],
            "cold_equals_warm": cold["fitness"] == warm["fitness"], "note": "per-candidate time of the warm process"}


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['lever']:14s} failed: {r['error']}"
    parts = [f"{r['lever']:14s} {r['s_per_candidate']:8.2f} s/candidate"]
    if "speedup" in r:
        parts.append(f"{r['speedup']:5.2f}x")
    if "max_abs_fitness_change" in r:
        parts.append(f"max |d fitness| {r['max_abs_fitness_change']:.3g}")
    if "compile_cold_process_s" in r:
        parts.append(f"process cold {r['compile_cold_process_s']:.0f} s, warm {r['compile_warm_process_s']:.0f} s")
    if r.get("note"):
        parts.append(f"({r['note']})")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
