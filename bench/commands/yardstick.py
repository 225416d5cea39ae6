"""``flexbench search-yardstick``: ranking quality of the search's evaluation modes against a large-n exact
reference (see :mod:`bench.search.yardstick`).

    flexbench search-yardstick --preset embedded-50 --candidates 30 --k 32,96,250 --reference-images 1000
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.search.setup import _ints


def _floats(text: str) -> list[float]:
    from flexiffusion.errors import UserError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--screen-z: give comma-separated numbers (e.g. 2,1.5,1), got {text!r}") from None


def run_yardstick(args) -> int:
    from tqdm.auto import tqdm

    from bench.evaluation import execution
    from bench.evaluation.inputs import resolve_inputs
    from bench.evaluation.setting import EvaluationSetting
    from bench.search import yardstick
    from bench.search.presets import get_preset
    from bench.search.setup import check_model, space_of
    from flexiffusion.io import atomic_write_json

    config = yardstick.YardstickConfig(args.preset, args.candidates, _ints(args.k, "--k"), args.reference_images,
                                       tuple(m for m in (args.modes or "").split(",") if m), args.seed,
                                       args.search_images, args.search_iterations, args.bootstrap,
                                       tuple(float(z) for z in _floats(args.screen_z)), args.n_p)
    for m in config.modes:
        execution.check_mode(yardstick.mode_of(m), args.device)
    preset = get_preset(args.preset)
    check_model(preset, None)
    inputs = resolve_inputs(preset.model, args.weights, device=args.device, clip=False)
    space, _, _ = space_of(preset)
    quality = {"extractor": inputs.extractor}
    if inputs.extractor_weights:
        quality["extractor_weights"] = inputs.extractor_weights
    setting = EvaluationSetting.for_images(config.total_images, model=preset.model, weights=args.weights,
                                           scheduler=preset.scheduler, grid_length=space.grid, fitness="rfid",
                                           batch_size=args.batch_size, device=args.device, threads=args.threads,
                                           **quality)
    out = Path(args.out or Path("runs") / "yardstick" / f"{preset.name}-s{config.seed}")
    print(f"yardstick {preset.name}: {config.candidates} candidates (half from a {config.search_iterations}-iteration "
          f"search at {config.search_images} images, half random; seed {config.seed}); modes "
          f"{', '.join(config.modes)} on images 0..{config.n - 1} (k = {', '.join(map(str, config.ks))}); reference: "
          f"exact fp32 rFID on images {config.n}..{config.total_images - 1}; noise floor: exact on images "
          f"{config.n}..{2 * config.n - 1}")
    bar = tqdm(total=config.candidates, desc="yardstick", unit="cand")
    try:
        summary = yardstick.run_yardstick(config, setting, cache_dir=args.cache_dir,
                                          progress=lambda i: bar.update(1))
    finally:
        bar.close()
    print(yardstick.format_table(summary))
    atomic_write_json(out / "yardstick.json", json.loads(json.dumps(summary, default=str)))
    print(f"wrote {out / 'yardstick.json'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("search-yardstick", help="ranking quality of the search's evaluation modes vs a large-n "
                       "exact reference (Kendall's tau with bootstrap intervals, noise floor, admissibility)")
    p.add_argument("--preset", required=True, help="search preset (its space, model and n_p)")
    p.add_argument("--candidates", type=int, default=30, help="candidates (default 30: half from a short search)")
    p.add_argument("--k", default="32,96,250", help="image counts of the modes (default 32,96,250)")
    p.add_argument("--reference-images", type=int, default=1000, help="images of the exact reference (default 1000)")
    p.add_argument("--modes", default="", help="modes beside exact: bf16, bf16-weights, channels_last, compile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search-images", type=int, default=32)
    p.add_argument("--search-iterations", type=int, default=4)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--screen-z", default="2", help="margins of the derived screened rows, e.g. 2,1.5,1,0.5")
    p.add_argument("--n-p", type=int, default=None, help="parents per draw for the screening rule (default: the "
                   "preset's; B.2's is 25)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=None, help="output folder (default runs/yardstick/PRESET-sSEED)")
    p.set_defaults(func=run_yardstick)
