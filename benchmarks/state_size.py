"""Print the size of the step engine's cache per image per kept branch (what a sampler state carries).

    PYTHONPATH=. python benchmarks/state_size.py [--presets ddpm-cifar10,embedded]

One full step at batch 1 (random weights; sizes depend on the architecture only), keeping one branch ``b``:
``all`` = every skipped module's output (``StepEngineConfig(minimal_cache=False)``, the engine before issue 8),
``kept`` = what the engine keeps now (the one tensor a partial step at ``b`` reads, plus one-element stand-ins),
``read`` = the bytes of that tensor.  A guided model under batched CFG runs at batch 2: twice these figures.
The numbers in docs/costs.md come from this command.
"""
import argparse

import torch

from bench.presets import build
from flexiffusion.engine import StepEngine, StepEngineConfig
from flexiffusion.schedule import Step
from flexiffusion.state import storage_nbytes
from flexiffusion.threads import num_threads

MB = 1e6


def kept_bytes(built, branch: int, minimal: bool) -> int:
    engine = StepEngine.attach(built.unet, StepEngineConfig(minimal_cache=minimal))
    try:
        with torch.no_grad(), engine.step(Step.full(), keep={branch}):
            built.unet(built.sample, built.timestep, **built.kwargs)
        return storage_nbytes(engine.cache_state()["contexts"]), engine.read_key(branch)
    finally:
        engine.detach()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="ddpm-cifar10,embedded")
    args = parser.parse_args(argv)
    print("| model | branch | all skipped outputs (MB/image) | kept now (MB/image) | read by the partial step |")
    print("|---|---|---|---|---|")
    with num_threads(1):
        for name in args.presets.split(","):
            built = build(name, batch_size=1)
            for b in range(1, StepEngine(built.unet).num_branches + 1):
                before, _ = kept_bytes(built, b, minimal=False)
                after, key = kept_bytes(built, b, minimal=True)
                print(f"| {name} | {b} | {before / MB:.3f} | {after / MB:.3f} | `{key}` |", flush=True)


if __name__ == "__main__":
    main()
