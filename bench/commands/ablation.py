"""``flexbench ablation``: how many images rFID, FID and MSE need to rank candidates (Tables 4 and 9).

    flexbench ablation --preset embedded-50 --candidates 20 --k 100,200,500,1000 --store runs/results.sqlite
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.search.setup import _ints, check_model


def run_ablation(args) -> int:
    from tqdm.auto import tqdm

    from bench.evaluation.setting import EvaluationSetting
    from bench.search import ablation
    from bench.search.driver import check_store_file
    from bench.search.presets import get_preset
    from bench.search.setup import space_of
    from bench.store import ResultStore

    ks = _ints(args.k, "--k")
    config = ablation.AblationConfig(args.preset, args.candidates, ks, args.reference_images, args.seed,
                                     args.first_seed)
    from bench.evaluation.inputs import resolve_inputs

    preset = get_preset(args.preset)
    check_model(preset, args.model)
    # the model, its weights and its quality reference (the FID ranking's real data) checked before anything runs
    inputs = resolve_inputs(preset.model, args.weights, device=args.device, real=args.real, extractor=args.extractor,
                            extractor_weights=args.extractor_weights, prompts_file=args.prompts, clip=False)
    space, _, _ = space_of(preset, model=args.model)
    check_store_file(args.store)
    out = Path(args.out or Path("runs") / "ablation" / f"{preset.name}-s{config.seed}")
    quality = {"extractor": inputs.extractor}
    if inputs.extractor_weights:
        quality["extractor_weights"] = inputs.extractor_weights
    prompts, guidance = (), None
    if inputs.entry.text:
        from bench.search.setup import text_condition

        prompts, guidance = text_condition(inputs.load(), config.n_sampled, args.prompts)
    setting = EvaluationSetting.for_images(config.n_sampled, config.first_seed, model=preset.model,
                                           weights=args.weights, scheduler=preset.scheduler, grid_length=space.grid,
                                           fitness="rfid", prompts=prompts, guidance=guidance,
                                           batch_size=args.batch_size, device=args.device, threads=args.threads,
                                           **quality)
    print(f"ablation {preset.name}: {config.candidates} random candidates (seed {config.seed}), sampled once at "
          f"{config.n_sampled} images (k = {', '.join(map(str, config.ks))} are its first k); reference: FID vs "
          f"the real data {inputs.real} with {config.n_reference} images; store {args.store}")
    with ResultStore(args.store) as store:  # opened (newer schema / lock refused) before the model loads
        source = ablation.EvaluatorSource(setting, space, cache_dir=args.cache_dir, real=inputs.real)
        bar = tqdm(total=config.candidates, desc="ablation", unit="cand")
        try:
            records, new = ablation.evaluate_candidates(
                config, space, source, store,
                lambda done, n_new: (bar.update(1), bar.set_postfix(new=n_new, stored=done - n_new)))
        finally:
            bar.close()
        summary = ablation.summarize(records, config)
        base = {**source.row_fields, "scheduler": preset.scheduler, "grid": space.grid,
                "seeds": f"{config.first_seed}-{config.first_seed + config.n_sampled - 1}"}
        ablation.store_summary(store, summary, config, records, source, base)
    out.mkdir(parents=True, exist_ok=True)
    df = ablation.frame(summary)
    df.to_csv(out / "tau.csv", index=False)
    ablation.plot(summary, out / "tau_vs_k.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    noise = summary["reference_noise"]
    print(f"evaluations: {new} new, {len(records) - new} read from the store")
    print(f"reference: FID of {config.n_reference} generated images vs the real data {inputs.real}; its own noise: tau "
          f"{noise['kendall_tau']:.3f} (p {noise['p_value']:.2g}) between its two disjoint {config.n_reference // 2}"
          "-image halves")
    from bench.results import fmt

    # the cells of `flexbench experiment table4 / table9`, formatted as there (bench.results)
    print(df.to_string(index=False, formatters={c: (lambda v, m=m: fmt(m, v) or "n/a") for c, m in
                                                ablation.SUMMARY_METRICS.items() if c in df.columns}))
    print(f"wrote {out / 'tau.csv'}, {out / 'tau_vs_k.png'}, {out / 'summary.json'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("ablation", help="rFID / FID / MSE image-count ablation (Tables 4 and 9): Kendall tau vs k",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="embedded-50", help="search preset whose space candidates are drawn from")
    p.add_argument("--candidates", type=int, default=20, help="random candidates (default 20)")
    p.add_argument("--k", default="100,200,500,1000", help="image counts, comma-separated (default 100,200,500,1000)")
    p.add_argument("--reference-images", type=int, default=None,
                   help="generated images of the reference FID vs real data (default: the largest k)")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidate draw")
    p.add_argument("--first-seed", type=int, default=0, help="first image seed")
    p.add_argument("--store", default="runs/results.sqlite", help="results store (resumable)")
    p.add_argument("--out", default=None, help="folder of tau.csv, tau_vs_k.png, summary.json")
    p.add_argument("--model", default=None, help="the model (must be the preset's; default: it)")
    p.add_argument("--weights", default=None, help="weights folder of a paper model (default: the model's)")
    p.add_argument("--real", default=None, help="real data of the FID reference ranking: a folder or FILE.npz "
                                                "(default: the model's, all digits for the embedded models)")
    p.add_argument("--extractor", default=None, help="feature extractor (default: the model's)")
    p.add_argument("--extractor-weights", default=None, help="local weights file of the extractor")
    p.add_argument("--prompts", default=None, help="text models: a file of prompts, one per line")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--cache-dir", default=None, help="teacher / feature cache (default FLEXBENCH_CACHE)")
    p.set_defaults(func=run_ablation)
