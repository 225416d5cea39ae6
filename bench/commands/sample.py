"""``flexbench sample``: run one plan on one model and write the images (PNG) — the engine's front door."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from baselines.deepcache import uniform_plan
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import SCHEDULERS
from flexiffusion.seeds import parse_seeds


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    from bench.models.catalog import MODELS

    p.add_argument("--model", default="embedded", metavar="MODEL",
                   help="model (default embedded): " + ", ".join(MODELS))
    p.add_argument("--weights", default=None, help="local diffusers folder or hub id in the HF cache (paper models)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default auto: cuda if available)")


def add_reference_arguments(p: argparse.ArgumentParser, prompts: bool = True) -> None:
    """The quality reference of a model; every default is the model's own (bench.models.catalog)."""
    p.add_argument("--real", default=None, help="real data for FID/IS/precision/recall: a folder of images, a "
                                                "statistics file FILE.npz (mu, sigma) or a named source "
                                                "(default: the model's, digits-all for the embedded models)")
    p.add_argument("--extractor", default=None, help="feature extractor (default: the model's; inception-v3-compat "
                                                     "for the paper models, digits-cnn for the embedded ones)")
    p.add_argument("--extractor-weights", default=None, help="local weights file of the extractor (default: looked "
                                                             "up in $FLEXBENCH_CACHE/weights and torch hub)")
    p.add_argument("--clip-model", default=None, help="open_clip model of the CLIP score (text models; default: the "
                                                      "model's)")
    p.add_argument("--clip-pretrained", default=None, help="open_clip tag in the HF cache, or a weights file "
                                                           "(default: the model's)")
    if prompts:
        p.add_argument("--prompts", default=None, help="text models: a file of prompts, one per line, cycled over "
                                                       "the images (default: the model's own, if any)")


def reference_kwargs(args) -> dict:
    """The quality-reference arguments of :func:`bench.evaluation.inputs.resolve_inputs` from parsed flags."""
    return {k: getattr(args, k, None) for k in ("real", "extractor", "extractor_weights", "clip_model",
                                                  "clip_pretrained")} | {"prompts_file": getattr(args, "prompts", None)}


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=100, help="base grid length (default 100)")
    p.add_argument("--scheduler", default=None, choices=sorted(SCHEDULERS),
                   help="sampler (default: the plan file's 'scheduler', else ddim; a plan with DPM-Solver segment "
                        "'orders' runs on its own single-step DPM-Solver)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--plan", help="plan JSON text or a path to a JSON file ({'steps': ['f', 'p3', 'n', ...]})")
    g.add_argument("--uniform", metavar="INTERVAL,BRANCH", help="DeepCache-like uniform plan, e.g. 5,2")


def _plan_text(args) -> str | None:
    if not args.plan:
        return None
    text = args.plan
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise UserError(f"plan file {text!r} not found: pass a JSON file or JSON text")
        text = path.read_text()
    return text


def scheduler_from_args(args, plan: Plan):
    """The sampler of ``plan``: a registry name (``--scheduler``, else the plan file's ``scheduler``, else ddim) or,
    for a searched DPM-Solver plan (its file lists per-segment ``orders``), a factory of that solver."""
    import json

    text = _plan_text(args)
    data = json.loads(text) if text else {}
    orders = data.get("orders") if isinstance(data, dict) else None
    if orders is None:
        name = args.scheduler or (data.get("scheduler") if isinstance(data, dict) else None) or "ddim"
        if name not in SCHEDULERS:
            raise UserError(f"the plan names scheduler {name!r}, which is not one of {', '.join(sorted(SCHEDULERS))}")
        return name
    from flexiffusion.schedulers import make_segment_dpm

    if args.scheduler is not None:
        raise UserError("this plan lists DPM-Solver segment orders and runs on its own solver: drop --scheduler")
    if not isinstance(orders, list) or sum(int(k) for k in orders) != len(plan):
        raise UserError(f"the plan's orders {orders!r} do not add up to its {len(plan)} steps: use the plan file "
                        "the search wrote")
    make_segment_dpm({"num_train_timesteps": 1000}, orders)  # validates the orders (1, 2 or 3) now
    return lambda config, length, device=None: make_segment_dpm(config, orders, device=device)


def plan_from_args(args) -> Plan:
    if args.plan:
        plan = Plan.from_json(_plan_text(args))
    elif args.uniform:
        try:
            interval, branch = (int(v) for v in args.uniform.split(","))
        except ValueError:
            raise UserError(f"malformed --uniform {args.uniform!r}: use INTERVAL,BRANCH, e.g. 5,2") from None
        plan = uniform_plan(args.steps, interval, branch)
    else:
        plan = Plan.full(args.steps)
    return plan.validate(grid_length=args.steps if not args.plan else None)


def write_pngs(images, seeds, out: Path) -> None:
    """Write ``images`` (uint8 NCHW) as out/seed-XXXXXX.png, atomically: all files or none."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for img, seed in zip(images, seeds):
            arr = img.permute(1, 2, 0).numpy()
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp / f"seed-{seed:06d}.png")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run(args) -> int:
    from bench.evaluation.inputs import resolve_inputs
    from bench.generate import generate_images

    inputs = resolve_inputs(args.model, args.weights, device=args.device, quality=False,
                            prompts_file=args.prompts)   # every input checked before the model loads
    plan = plan_from_args(args)
    scheduler = scheduler_from_args(args, plan)
    seeds = parse_seeds(args.seeds)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"output folder {out} is not empty: choose another --out or pass --overwrite")
    prompts = None
    if inputs.entry.text:
        if args.prompt and args.prompts:
            raise UserError("give --prompt TEXT or --prompts FILE, not both")
        if not (args.prompt or args.prompts):
            raise UserError(f"model {args.model!r} is text-conditional: pass --prompt TEXT or --prompts FILE")
        from bench.evaluation.inputs import read_prompts

        lines = [args.prompt] if args.prompt else read_prompts(args.prompts)
        prompts = [lines[i % len(lines)] for i in range(len(seeds))]
    elif args.prompt or args.prompts:
        raise UserError(f"model {args.model!r} takes no text: drop --prompt/--prompts")
    for note in inputs.notes:
        print(note)
    bundle = inputs.load()
    images = generate_images(bundle, plan, seeds, scheduler=scheduler, prompts=prompts,
                             guidance_scale=args.guidance, batch_size=args.batch_size)
    write_pngs(images, seeds, out)
    print(f"wrote {len(seeds)} images to {out} (plan {plan.name or plan.digest()}: NFE {plan.nfe}/{len(plan)})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate images with a plan (full / partial / null steps)",
                       description="Generate images with any plan on any model; one PNG per seed.")
    add_model_arguments(p)
    add_plan_arguments(p)
    p.add_argument("--seeds", default="0-15", help="per-sample seeds, e.g. 0-999 or 1,5,7 (default 0-15)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: none)")
    p.add_argument("--prompt", default=None, help="prompt for text-to-image models (one for all images)")
    p.add_argument("--prompts", default=None, help="text models: a file of prompts, one per line, cycled over seeds")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=run)
