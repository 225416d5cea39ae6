"""Would sharing U-Net calls between candidates help on this machine?  (issue 9 section 5, "Batch")

Several candidates evaluated side by side are at the same step at the same time; where their step types agree
(both full, or both partial at the same branch) their images could go through one U-Net call of the summed batch.
That pays only if a larger batch costs less per image.  This prints, for the embedded U-Net (random weights: the
cost depends on the architecture only) on this CPU, the time per image of one full step and of one partial step
at branch 1 for batches of ``--batches`` images (median of ``--repeats``), and the gain of one call of 2x the
batch over two calls of the batch: ``t(b) * 2 / t(2b)`` (1.00 = no gain).

    PYTHONPATH=. python benchmarks/batch_sharing.py --threads 1 --batches 16,32,64,128,250
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.presets import build
from flexiffusion.engine import StepEngine, StepEngineConfig
from flexiffusion.schedule import Step
from flexiffusion.threads import num_threads


def per_image(built, engine, batch: int, step: Step, repeats: int) -> float:
    x = torch.randn(batch, *built.sample.shape[1:])
    t = built.timestep
    times = []
    with torch.no_grad():
        with engine.step(Step.full(), keep={1}):   # fills the cache a partial step reads
            built.unet(x, t, **built.kwargs)
        for _ in range(repeats + 1):               # first call: warm-up
            t0 = time.perf_counter()
            with engine.step(step, keep={1} if step.kind == "full" else set()):
                built.unet(x, t, **built.kwargs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) / batch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="embedded")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="16,32,64,128,250")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    batches = [int(b) for b in a.batches.split(",")]
    with num_threads(a.threads):
        built = build(a.preset, batch_size=1)
        engine = StepEngine.attach(built.unet, StepEngineConfig())
        try:
            rows = {b: {k: per_image(built, engine, b, s, a.repeats) for k, s in
                        (("full", Step.full()), ("partial b1", Step.partial(1)))} for b in batches}
        finally:
            engine.detach()
    print(f"{a.preset} U-Net, {a.threads} thread(s), median of {a.repeats}: ms per image")
    print("| batch | full | partial b1 | gain of 2x batch (full) | gain of 2x batch (partial b1) |")
    print("|---|---|---|---|---|")
    for b in batches:
        g = {k: (f"{rows[b][k] / rows[2 * b][k]:.2f}" if 2 * b in rows else "") for k in rows[b]}
        print(f"| {b} | {1e3 * rows[b]['full']:.3f} | {1e3 * rows[b]['partial b1']:.3f} | {g['full']} | "
              f"{g['partial b1']} |")


if __name__ == "__main__":
    main()
