"""``flexbench fid`` (FID / KID / precision-recall / IS between two image sets) and ``flexbench clip-score``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flexiffusion.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fid",
        help="FID (and KID, precision/recall, IS) between two image folders or named sources",
        description="Features by a torch-fidelity extractor; the reference side (--input2) is cached under its "
                    "name and content hash. Example: flexbench fid --input1 samples/ --input2 digits-train",
    )
    p.add_argument("--input1", required=True, help="generated images: a folder (png/jpg)")
    p.add_argument("--input2", required=True, help="reference: a folder, a named source (digits-train, ...) or FID "
                                                  "statistics FILE.npz (mu, sigma; FID and IS only)")
    p.add_argument("--metrics", default="fid", help="comma-separated subset of fid,kid,prc,isc (default fid)")
    p.add_argument("--extractor", default=None, help="feature extractor (default digits-cnn; inception-v3-compat)")
    p.add_argument("--extractor-weights", type=Path, default=None, help="local weights file of the extractor")
    p.add_argument("--batch-size", type=int, default=64, help="feature extraction batch size (default 64)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache (default $FLEXBENCH_CACHE or ~/.cache/...)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    p.add_argument("--json", type=Path, default=None, help="also write the result dict to this JSON file")
    p.set_defaults(func=run_fid)

    c = subparsers.add_parser("clip-score", help="CLIP score of an image folder against prompts (open_clip, offline)")
    c.add_argument("--images", required=True, type=Path, help="folder of images, paired in sorted name order")
    c.add_argument("--prompts", required=True, type=Path, help="text file, one prompt per line (or one for all)")
    c.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    c.add_argument("--pretrained", default="openai", help="open_clip tag in the HF cache, or a weights file")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--json", type=Path, default=None, help="also write the result dict to this JSON file")
    c.set_defaults(func=run_clip_score)


def _emit(result: dict, path: Path | None) -> int:
    for k, v in result.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_fid(args: argparse.Namespace) -> int:
    from bench.quality.extractors import DEFAULT_EXTRACTOR
    from bench.quality.fidelity import fidelity
    from bench.quality.sources import resolve_input

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    images1, _ = resolve_input(args.input1, "input1")
    from bench.quality.reference import resolve_real

    images2, label = resolve_real(args.input2, "input2")   # a folder, a named source or FID statistics (.npz)
    result = fidelity(images1, images2, metrics, extractor=args.extractor or DEFAULT_EXTRACTOR,
                      weights_path=args.extractor_weights, reference_source=label, batch_size=args.batch_size,
                      cuda=False if args.cpu else None, cache_dir=args.cache_dir, cache=not args.no_cache)
    return _emit(result, args.json)


def run_clip_score(args: argparse.Namespace) -> int:
    from bench.quality.clip_score import ClipScorer
    from bench.quality.images import as_images

    if not args.prompts.is_file():
        raise UserError(f"--prompts {args.prompts} is not a file")
    prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"--prompts {args.prompts} has no prompts")
    images = as_images(args.images, "images")
    scorer = ClipScorer(args.model, args.pretrained, batch_size=args.batch_size)
    result = scorer(images, prompts[0] if len(prompts) == 1 else prompts)
    return _emit(result, args.json)
