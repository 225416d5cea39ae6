"""``flexbench embedded-train`` and ``flexbench embedded-gates``: train the embedded model, measure its quality gates."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path


from .train_options import apply_train_options

TRAIN_COMMAND = "flexbench embedded-train --out runs/embedded --install"
MODELS = ("embedded", "embedded-t2i")  # the digits model; the text-to-image model (bench.embedded.t2i)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embedded-train",
        help="train the embedded digits model and classifier (CPU; resumable)",
        description="Train the digit classifier and the class-conditional 16x16 DDPM on sklearn digits. "
                    "Re-running with the same --out resumes from OUT/checkpoint.pt. The result is written to "
                    "OUT/weights; --install then copies it into bench/embedded/weights.",
    )
    p.add_argument("--model", choices=MODELS, default="embedded",
                   help="embedded (digits, default) or embedded-t2i (text-to-image; bench/embedded/t2i)")
    p.add_argument("--out", required=True, type=Path, help="output directory (checkpoints, final weights)")
    p.add_argument("--steps", type=int, default=None, help="diffusion training steps (default 6000)")
    p.add_argument("--batch-size", type=int, default=None, help="diffusion batch size (default 64)")
    p.add_argument("--classifier-epochs", type=int, default=None, help="classifier epochs (default 30)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 250)")
    p.add_argument("--text-steps", type=int, default=None, help="embedded-t2i: conditioning encoder steps (500)")
    p.add_argument("--clip-steps", type=int, default=None, help="embedded-t2i: scoring CLIP steps (500)")
    p.add_argument("--contrastive-batch", type=int, default=None, help="embedded-t2i: CLIP batch size (128)")
    p.add_argument("--install", action="store_true", help="copy OUT/weights into bench/embedded/weights when done")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    g = subparsers.add_parser(
        "embedded-gates",
        help="measure the embedded model's quality gates and record them in its manifest",
    )
    g.add_argument("--model", choices=MODELS, default="embedded", help="which embedded model (default embedded)")
    g.add_argument("--n", type=int, default=None, help="number of samples per gate (default 1000)")
    g.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: embedded 100 DDIM eta 0, embedded-t2i 50 PLMS)")
    g.add_argument("--guidance-scale", type=float, default=None, help="CFG scale of the conditional gate (default: embedded 3, embedded-t2i its "
                   "default sampler's 1.5)")
    g.add_argument("--seed", type=int, default=0, help="first per-sample seed (default 0)")
    g.add_argument("--batch-size", type=int, default=None, help="sampling batch size (default 250)")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    g.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped one)")
    g.add_argument("--grid", type=Path, default=None,
                   help="sample grid PNG path (default docs/embedded_samples.png, docs/embedded_t2i_samples.png)")
    g.add_argument("--no-record", action="store_true", help="do not write the figures into the manifest")
    g.set_defaults(func=run_gates)


def run_train(args: argparse.Namespace) -> int:
    if args.model == "embedded-t2i":
        from bench.commands.embedded_t2i_train import run_train as run_t2i

        return run_t2i(args)
    from bench.embedded.train import TrainConfig, install_weights, train

    cfg = apply_train_options(TrainConfig(), args, ("steps", "batch_size", "classifier_epochs", "seed",
                                                    "checkpoint_every"))
    command = _train_command_line(args)
    weights = train(args.out, cfg, command=command, threads=args.threads, progress=not args.no_progress)
    print(f"weights written to {weights}")
    if args.install:
        dst = install_weights(weights)
        print(f"installed into {dst}")
    return 0


def _train_command_line(args: argparse.Namespace) -> str:
    """The exact command that reproduces this run (recorded in the manifest)."""
    parts = ["flexbench", "embedded-train", "--out", str(args.out)]
    for name in ("steps", "batch_size", "classifier_epochs", "seed", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    parts += ["--threads", str(args.threads)]
    if args.install:
        parts.append("--install")
    return " ".join(shlex.quote(p) for p in parts)


GATE_DEFAULTS = {
    "embedded": dict(n=1000, steps=100, guidance_scale=3.0, batch_size=250, grid=Path("docs/embedded_samples.png")),
    "embedded-t2i": dict(n=1000, steps=50, guidance_scale=None, batch_size=250,  # guidance: DEFAULT_SAMPLER
                         grid=Path("docs/embedded_t2i_samples.png")),
}


def run_gates(args: argparse.Namespace) -> int:
    """Measure the model's quality gates (bench.evaluation.gates / gates_t2i), print them, record them."""
    from flexiffusion.errors import UserError
    from flexiffusion.threads import num_threads

    for name, value in GATE_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model == "embedded-t2i":
        from bench.embedded.t2i.loader import WEIGHTS_DIR
        from bench.embedded.t2i.unet import DEFAULT_SAMPLER
        from bench.evaluation import gates_t2i as gates

        if args.guidance_scale is None:
            args.guidance_scale = DEFAULT_SAMPLER["guidance_scale"]
        least, weights = 10, args.weights or WEIGHTS_DIR
    else:
        from bench.evaluation import gates

        least, weights = 100, args.weights   # the digits grid shows 100 samples
    if args.n < least or args.steps < 1 or args.batch_size < 1 or args.threads < 1:
        raise UserError(f"embedded-gates needs --n >= {least}, --steps >= 1, --batch-size >= 1, --threads >= 1")
    with num_threads(args.threads):  # scoped: the caller's thread count is restored
        result = gates.measure(args.n, args.steps, args.guidance_scale, args.seed, args.batch_size, args.weights,
                               args.grid)
    print(gates.format_report(result))
    if args.grid is not None:
        print(f"sample grid: {args.grid}")
    if not args.no_record:
        from bench.evaluation.gates import record

        print(f"recorded in {record(result, weights)}")
    return 0
