"""Quality gates (``flexbench embedded-gates``) of the embedded model, measured with the project's sampler (100-step
DDIM, eta 0) and metrics (:func:`bench.quality.fidelity` with the digits-cnn extractor), recorded in the weights'
``manifest.json``.

Gates (``n`` samples, per-sample seeds ``seed .. seed + n - 1``; the same seeds serve both sample sets):

* unconditional (label = null class): FID(samples, all 1797 real digits) <= 3 x FID between the two halves of a
  random split of the real digits (``torch.randperm(1797, generator=seed 0)``: 898 / 899);
  every class holds 5-15% of the samples (as classified); >= 85% of samples classified with confidence >= 0.9;
* class-conditional with classifier-free guidance (sample i asks for digit ``i % 10``): >= 95% classified as asked.

Samples stay floats in [-1, 1] until a metric converts them (one conversion: :func:`bench.quality.images.as_images`).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

GATES = dict(fid_ratio_max=3.0, class_fraction_min=0.05, class_fraction_max=0.15, confident_fraction_min=0.85,
             confidence_threshold=0.9, cfg_accuracy_min=0.95)
SAMPLE_RANGE = (-1.0, 1.0)  # value range of the samples handed to the metrics
METRIC_BATCH = 250


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
    return latents.clamp(*SAMPLE_RANGE)


def real_halves(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves (898 / 899) of a random split of all real digits, uint8."""
    from bench.quality.sources import digits_uint8

    real = digits_uint8("all")
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    h = real.shape[0] // 2
    return real[perm[:h]], real[perm[h:]]


def check_gates(fid_ratio: float, class_fractions, confident_fraction: float, cfg_accuracy: float,
                gates: dict = GATES) -> dict[str, bool]:
    """Which gate each figure passes (thresholds inclusive)."""
    fractions = torch.as_tensor(class_fractions, dtype=torch.float64)
    return dict(
        fid=bool(fid_ratio <= gates["fid_ratio_max"]),
        class_balance=bool(((fractions >= gates["class_fraction_min"])
                            & (fractions <= gates["class_fraction_max"])).all()),
        confidence=bool(confident_fraction >= gates["confident_fraction_min"]),
        cfg_accuracy=bool(cfg_accuracy >= gates["cfg_accuracy_min"]),
    )


def grid_png(uncond: torch.Tensor, cond: torch.Tensor, path: Path, scale: int = 4) -> None:
    """Two 10x10 grids side by side (torchvision ``make_grid``/``save_image``, 1-pixel grey frames between digits):
    unconditional samples | CFG samples (row r = digit r).  Inputs: 100 images each, uint8 or floats in [-1, 1]."""
    from torchvision.utils import make_grid, save_image

    from bench.quality.images import as_images
    from flexiffusion.io import atomic_path

    def grid(x):
        x = as_images(x, "grid", SAMPLE_RANGE).tensor()[:100].float() / 255.0
        return make_grid(x, nrow=10, padding=1, pad_value=96 / 255)[:1]

    a, b = grid(uncond), grid(cond)
    gap = torch.full((1, a.shape[1], 4), 128 / 255)
    img = torch.cat([a, gap, b], dim=2).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    with atomic_path(path, suffix=".png") as tmp:
        save_image(img, tmp, format="png")


def measure(n: int = 1000, steps: int = 100, guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 250,
            weights_dir: Path | None = None, grid: Path | None = None, progress: bool = True,
            cache_dir=None) -> dict:
    from bench.embedded.classifier import predict
    from bench.embedded.data import NUM_CLASSES
    from bench.embedded.extractor import NAME
    from bench.embedded.loader import load_embedded
    from bench.quality import Extractor, fidelity
    from bench.quality.sources import digits_uint8

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

    extractor = Extractor(NAME, model.path / "classifier.safetensors", cuda=False)

    def metrics(images, reference, which=("fid", "kid", "prc"), source=None):
        return fidelity(images, reference, which, extractor=extractor, reference_source=source,
                        batch_size=METRIC_BATCH, cache_dir=cache_dir, value_range=SAMPLE_RANGE)

    real = digits_uint8("all")
    half_a, half_b = real_halves(0)
    m_uncond = metrics(uncond, real, ("fid", "kid", "prc", "isc"), source="digits-all")
    m_cond = metrics(cond, real, ("fid", "isc"), source="digits-all")
    m_real = metrics(half_a, half_b)
    fid_ratio = m_uncond["fid"] / m_real["fid"]
    # FID is biased upwards by small sample sizes, so the gate's two FIDs (1000 vs 1797 images; 898 vs 899) are not
    # measured alike: also compare at equal sizes, samples[:899] and real half A each against real half B
    m_matched = metrics(uncond[:half_b.shape[0]], half_b, ("fid",))
    passed = check_gates(fid_ratio, fractions.tolist(), confident, cfg_acc)
    if grid is not None:
        order = torch.argsort(asked[:100], stable=True)  # rows: digit 0..9
        grid_png(uncond[:100], cond[:100][order], Path(grid))
    return dict(
        protocol=dict(n=n, ddim_steps=steps, eta=0.0, seeds=f"{seed}-{seed + n - 1}", guidance_scale=guidance_scale,
                      sampler="bench.generate.generate_latents, Plan.full, make_scheduler('ddim')",
                      metrics="bench.quality.fidelity (torch-fidelity formulas), batch 250",
                      reference="all 1797 real digits (uint8 16x16)", extractor=NAME),
        gates=GATES,
        uncond=dict(fid=m_uncond["fid"], kid=m_uncond["kid_mean"], precision=m_uncond["precision"],
                    recall=m_uncond["recall"], isc=m_uncond["isc_mean"],
                    class_fractions=[round(v, 4) for v in fractions.tolist()],
                    confident_fraction=confident, sampling_s=round(t_uncond, 1)),
        real_halves=dict(fid=m_real["fid"], kid=m_real["kid_mean"], precision=m_real["precision"],
                         recall=m_real["recall"]),
        fid_ratio=fid_ratio,
        matched_size=dict(n=int(half_b.shape[0]), fid_samples_vs_half_b=m_matched["fid"],
                          fid_half_a_vs_half_b=m_real["fid"], ratio=m_matched["fid"] / m_real["fid"]),
        cfg=dict(accuracy=cfg_acc, fid=m_cond["fid"], isc=m_cond["isc_mean"], sampling_s=round(t_cond, 1)),
        passed=passed,
        all_passed=all(passed.values()),
        threads=torch.get_num_threads(),
    )


def record(result: dict, weights_dir: Path | None = None) -> Path:
    """Write ``result`` as the manifest's ``quality`` entry (atomically; weight files and their hashes untouched)."""
    from bench.embedded.loader import WEIGHTS_DIR, read_manifest
    from flexiffusion.io import atomic_write_json

    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    manifest = read_manifest(weights_dir)
    manifest["quality"] = result
    return atomic_write_json(weights_dir / "manifest.json", manifest, sort_keys=False)


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

