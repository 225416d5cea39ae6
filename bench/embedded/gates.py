"""Quality gates of the embedded model, measured with the project's sampler (100-step DDIM, eta 0) and the
digits-cnn extractor, and recorded in the weights' ``manifest.json``.

Gates (``n`` samples, per-sample seeds ``seed .. seed + n - 1``; the same seeds serve both sample sets):

* unconditional (label = null class): FID(samples, all 1797 real digits) <= 3 x FID between the two halves of a
  random split of the real digits (``torch.randperm(1797, generator=seed 0)``: 898 / 899);
  every class holds 5-15% of the samples (as classified); >= 85% of samples classified with confidence >= 0.9;
* class-conditional with classifier-free guidance (sample i asks for digit ``i % 10``): >= 95% classified as asked.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

GATES = dict(fid_ratio_max=3.0, class_fraction_min=0.05, class_fraction_max=0.15, confident_fraction_min=0.85,
             confidence_threshold=0.9, cfg_accuracy_min=0.95)


@torch.no_grad()
def sample_digits(unet, scheduler_config: dict, seeds: list[int], labels: torch.Tensor | None,
                  guidance_scale: float | None, steps: int = 100, batch_size: int = 250, null_class: int = 10,
                  progress: bool = True) -> torch.Tensor:
    """DDIM (eta 0) samples in [-1, 1]; ``labels`` None: unconditional (null class); guidance as in Ho & Salimans.
    Sampled by the harness's own generator (:func:`bench.generate.generate_latents`)."""
    from bench.generate import generate_latents
    from bench.models import ModelBundle
    from flexiffusion.schedule import Plan

    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    bundle = ModelBundle("embedded", unet, scheduler_config, shape, conditioning="class", num_classes=null_class,
                         null_class=null_class)
    latents = generate_latents(bundle, Plan.full(steps, name="teacher"), seeds, labels=labels,
                               guidance_scale=guidance_scale, batch_size=batch_size, progress=progress)
    return latents.clamp(-1, 1)


def fidelity(images_a: torch.Tensor, images_b: torch.Tensor, isc: bool = False,
             classifier_path: Path | None = None) -> dict:
    """FID / KID / precision-recall (and IS of ``images_a``) with digits-cnn on uint8 NCHW tensors."""
    import torch_fidelity

    from bench.embedded.data import Uint8Images
    from bench.embedded.extractor import ensure_registered

    name = ensure_registered()
    subset = min(1000, len(images_a), len(images_b))
    m = torch_fidelity.calculate_metrics(
        input1=Uint8Images(images_a), input2=Uint8Images(images_b), feature_extractor=name, fid=True, kid=True,
        prc=True, isc=isc, cuda=False, save_cpu_ram=True, verbose=False, kid_subset_size=subset,
        batch_size=250, feature_extractor_weights_path=None if classifier_path is None else str(classifier_path),
    )
    return {k: float(v) for k, v in m.items()}


def real_halves(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves (898 / 899) of a random split of all real digits, uint8."""
    from bench.embedded.data import load_split_uint8

    real, _ = load_split_uint8("all")
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    h = real.shape[0] // 2
    return real[perm[:h]], real[perm[h:]]


def real_halves_fid(seed: int = 0, classifier_path: Path | None = None) -> dict:
    a, b = real_halves(seed)
    return fidelity(a, b, classifier_path=classifier_path)


def grid_png(uncond: torch.Tensor, cond: torch.Tensor, path: Path, scale: int = 4) -> None:
    """Two 10x10 grids side by side: unconditional samples | CFG samples (row r = digit r)."""
    from PIL import Image

    def grid(x):  # x: (100,1,H,W) uint8; a 1-pixel grey frame keeps touching digits apart
        x = torch.nn.functional.pad(x[:, 0], (1, 1, 1, 1), value=96)
        n, h, w = x.shape
        g = x.reshape(10, 10, h, w).permute(0, 2, 1, 3).reshape(10 * h, 10 * w)
        return g.repeat_interleave(scale, 0).repeat_interleave(scale, 1)

    a, b = grid(uncond), grid(cond)
    gap = torch.full((a.shape[0], 4 * scale), 128, dtype=torch.uint8)
    img = torch.cat([a, gap, b], dim=1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(img, mode="L").save(tmp)
    os.replace(tmp, path)


def measure(n: int = 1000, steps: int = 100, guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 250,
            weights_dir: Path | None = None, grid: Path | None = None, progress: bool = True) -> dict:
    from bench.embedded.classifier import predict
    from bench.embedded.data import NUM_CLASSES, load_split_uint8, to_uint8
    from bench.embedded.loader import load_embedded

    model = load_embedded(verify=True, weights_dir=weights_dir)
    seeds = list(range(seed, seed + n))
    null = model.manifest.get("unet", {}).get("null_class", 10)
    t0 = time.perf_counter()
    uncond = sample_digits(model.unet, model.scheduler_config, seeds, None, None, steps, batch_size, null, progress)
    t_uncond = time.perf_counter() - t0
    asked = torch.arange(n) % NUM_CLASSES
    t0 = time.perf_counter()
    cond = sample_digits(model.unet, model.scheduler_config, seeds, asked, guidance_scale, steps, batch_size, null,
                         progress)
    t_cond = time.perf_counter() - t0

    pred, conf = predict(model.classifier, uncond)
    fractions = torch.bincount(pred, minlength=NUM_CLASSES).float() / n
    confident = (conf >= GATES["confidence_threshold"]).float().mean().item()
    pred_c, _ = predict(model.classifier, cond)
    cfg_acc = (pred_c == asked).float().mean().item()

    real, _ = load_split_uint8("all")
    cpath = model.path / "classifier.safetensors"
    m_uncond = fidelity(to_uint8(uncond), real, isc=True, classifier_path=cpath)
    m_cond = fidelity(to_uint8(cond), real, isc=True, classifier_path=cpath)
    m_real = real_halves_fid(0, cpath)
    fid_ratio = m_uncond["frechet_inception_distance"] / m_real["frechet_inception_distance"]
    # FID is biased upwards by small sample sizes, so the gate's two FIDs (1000 vs 1797 images; 898 vs 899) are not
    # measured alike: also compare at equal sizes, samples[:899] and real half A each against real half B
    half_a, half_b = real_halves(0)
    m_matched = fidelity(to_uint8(uncond[:half_b.shape[0]]), half_b, classifier_path=cpath)
    m_matched_real = fidelity(half_a, half_b, classifier_path=cpath)
    passed = dict(
        fid=fid_ratio <= GATES["fid_ratio_max"],
        class_balance=bool(((fractions >= GATES["class_fraction_min"]) & (fractions <= GATES["class_fraction_max"])).all()),
        confidence=confident >= GATES["confident_fraction_min"],
        cfg_accuracy=cfg_acc >= GATES["cfg_accuracy_min"],
    )
    if grid is not None:
        order = torch.argsort(asked[:100], stable=True)  # rows: digit 0..9
        grid_png(to_uint8(uncond[:100]), to_uint8(cond[:100][order]), Path(grid))
    return dict(
        protocol=dict(n=n, ddim_steps=steps, eta=0.0, seeds=f"{seed}-{seed + n - 1}", guidance_scale=guidance_scale,
                      sampler="flexiffusion.sampler.sample, Plan.full, make_scheduler('ddim')",
                      reference="all 1797 real digits (uint8 16x16)", extractor="digits-cnn"),
        gates=GATES,
        uncond=dict(fid=m_uncond["frechet_inception_distance"], kid=m_uncond["kernel_inception_distance_mean"],
                    precision=m_uncond["precision"], recall=m_uncond["recall"],
                    isc=m_uncond["inception_score_mean"], class_fractions=[round(v, 4) for v in fractions.tolist()],
                    confident_fraction=confident, sampling_s=round(t_uncond, 1)),
        real_halves=dict(fid=m_real["frechet_inception_distance"], kid=m_real["kernel_inception_distance_mean"],
                         precision=m_real["precision"], recall=m_real["recall"]),
        fid_ratio=fid_ratio,
        matched_size=dict(n=int(half_b.shape[0]), fid_samples_vs_half_b=m_matched["frechet_inception_distance"],
                          fid_half_a_vs_half_b=m_matched_real["frechet_inception_distance"],
                          ratio=m_matched["frechet_inception_distance"] / m_matched_real["frechet_inception_distance"]),
        cfg=dict(accuracy=cfg_acc, fid=m_cond["frechet_inception_distance"], isc=m_cond["inception_score_mean"],
                 sampling_s=round(t_cond, 1)),
        passed=passed,
        all_passed=all(passed.values()),
        threads=torch.get_num_threads(),
    )


def record(result: dict, weights_dir: Path | None = None) -> Path:
    """Write ``result`` as the manifest's ``quality`` entry (atomically; weight files and their hashes untouched)."""
    from bench.embedded.loader import WEIGHTS_DIR, read_manifest

    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    manifest = read_manifest(weights_dir)
    manifest["quality"] = result
    path = weights_dir / "manifest.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def format_report(r: dict) -> str:
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    p, u, c = r["passed"], r["uncond"], r["cfg"]
    g = r["gates"]
    fr = " ".join(f"{i}:{v:.3f}" for i, v in enumerate(u["class_fractions"]))
    return "\n".join([
        f"embedded quality gates: n={r['protocol']['n']}, DDIM {r['protocol']['ddim_steps']} steps (eta 0), "
        f"CFG scale {r['protocol']['guidance_scale']}",
        f"  [{ok(p['fid'])}] FID(uncond, real) {u['fid']:.3f} / FID(real halves) {r['real_halves']['fid']:.3f} "
        f"= {r['fid_ratio']:.2f} (<= {g['fid_ratio_max']})",
        f"  [{ok(p['class_balance'])}] class fractions {fr} (each in {g['class_fraction_min']}..{g['class_fraction_max']})",
        f"  [{ok(p['confidence'])}] confident (>= {g['confidence_threshold']}) {u['confident_fraction']:.3f} "
        f"(>= {g['confident_fraction_min']})",
        f"  [{ok(p['cfg_accuracy'])}] CFG accuracy {c['accuracy']:.3f} (>= {g['cfg_accuracy_min']})",
        f"  also: uncond KID {u['kid']:.4f} precision {u['precision']:.3f} recall {u['recall']:.3f} IS {u['isc']:.2f}; "
        f"real halves KID {r['real_halves']['kid']:.4f} P {r['real_halves']['precision']:.3f} "
        f"R {r['real_halves']['recall']:.3f}; CFG FID {c['fid']:.3f} IS {c['isc']:.2f}",
        f"  equal sizes ({r['matched_size']['n']} images each vs real half B): FID samples "
        f"{r['matched_size']['fid_samples_vs_half_b']:.3f}, real half A {r['matched_size']['fid_half_a_vs_half_b']:.3f}"
        f", ratio {r['matched_size']['ratio']:.2f}",
        f"  all gates: {ok(r['all_passed'])}",
    ])


def run_gates(args: argparse.Namespace) -> int:
    from flexiffusion.errors import UserError

    if args.n < 100 or args.steps < 1 or args.batch_size < 1 or args.threads < 1:
        raise UserError("embedded-gates needs --n >= 100 (the grid shows 100 samples), --steps >= 1, "
                        "--batch-size >= 1, --threads >= 1")
    torch.set_num_threads(args.threads)
    result = measure(args.n, args.steps, args.guidance_scale, args.seed, args.batch_size, args.weights, args.grid)
    print(format_report(result))
    if args.grid is not None:
        print(f"sample grid: {args.grid}")
    if not args.no_record:
        print(f"recorded in {record(result, args.weights)}")
    return 0
