"""``flexbench embedded-train --model embedded-t2i``: the text-to-image model's training (see :mod:`.train`)."""
from __future__ import annotations

import argparse
import shlex

from flexiffusion.errors import UserError

TRAIN_COMMAND = "flexbench embedded-train --model embedded-t2i --out runs/embedded-t2i --install"
OPTIONS = ("steps", "batch_size", "seed", "checkpoint_every")


def run_train(args: argparse.Namespace) -> int:
    from bench.commands.train_options import apply_train_options
    from bench.embedded.t2i.loader import WEIGHTS_DIR
    from bench.embedded.t2i.train import T2ITrainConfig, train
    from bench.embedded.train import install_weights

    if args.classifier_epochs is not None:
        raise UserError("--classifier-epochs belongs to the digits model: embedded-t2i reuses its classifier")
    cfg = apply_train_options(T2ITrainConfig(), args, OPTIONS + ("text_steps", "clip_steps", "contrastive_batch"))
    weights = train(args.out, cfg, command=command_line(args), threads=args.threads, progress=not args.no_progress)
    print(f"weights written to {weights}")
    if args.install:
        print(f"installed into {install_weights(weights, WEIGHTS_DIR)}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The exact command that reproduces this run (recorded in the manifest)."""
    parts = ["flexbench", "embedded-train", "--model", "embedded-t2i", "--out", str(args.out)]
    for name in OPTIONS + ("text_steps", "clip_steps", "contrastive_batch"):
        value = getattr(args, name, None)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    parts += ["--threads", str(args.threads)] + (["--install"] if args.install else [])
    return " ".join(shlex.quote(p) for p in parts)
