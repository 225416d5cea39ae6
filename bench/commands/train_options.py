"""Command-line options of the embedded models' training commands, checked and copied onto a training config."""
from __future__ import annotations

import argparse

from flexiffusion.errors import UserError


POSITIVE = ("batch_size", "checkpoint_every", "text_steps", "clip_steps", "contrastive_batch")


def apply_train_options(cfg, args: argparse.Namespace, names):
    """Copy the given command-line options onto a training config (options in ``POSITIVE`` must be >= 1, the
    others >= 0) after checking --threads and --out; bad values are one UserError naming the option."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            if value < 0 or (value == 0 and name in POSITIVE):
                raise UserError(f"--{name.replace('_', '-')} must be {'>= 1' if name in POSITIVE else '>= 0'}, "
                                f"got {value}")
            setattr(cfg, name, value)
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a directory")
    return cfg

