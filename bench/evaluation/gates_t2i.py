"""Quality gates of the text-to-image model, measured with the harness (``bench.generate``, 50-step PLMS, batched
classifier-free guidance), the scoring CLIP through ``bench.quality``'s CLIP-score path and the digits model's
digits-cnn classifier / extractor, and recorded in the weights' ``manifest.json``:

* scoring CLIP zero-shot accuracy on the 360 held-out real digits x the held-out templates >= 95%;
* CLIP score of held-out real digits with their own caption minus with a wrong digit's caption (reported);
* guided samples (prompt ``i``: held-out template, digit ``i % 10``) classified as the prompted digit >= 95%;
* CLIP score of the samples >= 90% of the CLIP score of real digits with the same prompts;
* FID (digits-cnn) of ``m`` samples vs real half B <= 3 x FID of ``m`` images of real half A vs half B,
  ``m = min(n, 898)`` (equal sizes; the halves of :func:`bench.evaluation.gates.real_halves`), through
  :func:`bench.quality.fidelity` with the digits-cnn extractor.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

GATES = dict(zero_shot_min=0.95, prompt_accuracy_min=0.95, clip_ratio_min=0.90, fid_ratio_max=3.0)
METRIC_BATCH = 250


def heldout_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out real digits as uint8 NCHW images and their int64 labels."""
    from bench.embedded.data import load_split
    from bench.quality.sources import digits_uint8

    return digits_uint8("heldout"), load_split("heldout")[1]


def scorer_for(model, batch_size: int = 500):
    """The suite's CLIP scorer on the shipped scoring CLIP (offline, from the weights folder)."""
    from bench.embedded.t2i.clip_model import register
    from bench.quality.clip_score import ClipScorer

    return ClipScorer(register(), pretrained=model.clip_weights, device="cpu", batch_size=batch_size)


@torch.no_grad()
def real_clip_figures(scorer) -> dict:
    """Zero-shot accuracy and the own-vs-wrong caption gap on the held-out real digits (held-out templates)."""
    from bench.embedded.t2i.captions import HELDOUT_TEMPLATES, caption

    images, labels = heldout_digits()
    img = scorer.image_embeddings(images)
    hits, own, wrong = 0, [], []
    for k, template in enumerate(HELDOUT_TEMPLATES):
        txt = scorer.text_embeddings([caption(d, template) for d in range(10)])
        cos = img @ txt.T
        hits += (cos.argmax(-1) == labels).sum().item()
        wrong_digit = (labels + 1 + (torch.arange(len(labels)) + k) % 9) % 10
        own.append(100 * cos.gather(1, labels[:, None]).clamp(min=0))
        wrong.append(100 * cos.gather(1, wrong_digit[:, None]).clamp(min=0))
    own, wrong = torch.cat(own).mean().item(), torch.cat(wrong).mean().item()
    return dict(zero_shot=hits / (len(labels) * len(HELDOUT_TEMPLATES)), clip_own=own, clip_wrong=wrong,
                clip_gap=own - wrong, n_images=len(labels), n_templates=len(HELDOUT_TEMPLATES))


def paired_real(digits: list[int]) -> torch.Tensor:
    """For each prompted digit, a held-out real digit of that class (cycling through the class in order)."""
    images, labels = heldout_digits()
    by_class = [images[labels == d] for d in range(10)]
    seen = [0] * 10
    out = []
    for d in digits:
        out.append(by_class[d][seen[d] % len(by_class[d])])
        seen[d] += 1
    return torch.stack(out)


def generate(bundle, prompts: list[str], seeds: list[int], steps: int, guidance_scale: float, batch_size: int,
             progress: bool = True) -> torch.Tensor:
    """uint8 samples: PLMS ``steps`` (grid steps + 1), batched CFG, all-full plan."""
    from bench.generate import generate_images
    from flexiffusion.schedule import Plan
    from flexiffusion.schedulers import grid_length

    plan = Plan.full(grid_length("plms", steps), name="teacher")
    return generate_images(bundle, plan, seeds, scheduler="plms", prompts=prompts, guidance_scale=guidance_scale,
                           cfg="batched", batch_size=batch_size, progress=progress)


def grid_png(bundle, path: Path, steps: int, guidance_scale: float, per_row: int = 8, scale: int = 4) -> list[str]:
    """One row per prompt (digit r, held-out template r): ``per_row`` seeds each, the prompt written on the left."""
    import os

    from PIL import Image, ImageDraw

    from bench.embedded.t2i.captions import HELDOUT_TEMPLATES, caption

    prompts = [caption(r, HELDOUT_TEMPLATES[r % len(HELDOUT_TEMPLATES)]) for r in range(10)]
    images = generate(bundle, [p for p in prompts for _ in range(per_row)], list(range(10 * per_row)), steps,
                      guidance_scale, 10 * per_row, progress=False)
    x = torch.nn.functional.pad(images[:, 0], (1, 1, 1, 1), value=96)
    n, h, w = x.shape
    g = x.reshape(10, per_row, h, w).permute(0, 2, 1, 3).reshape(10 * h, per_row * w)
    g = g.repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
    text_w = 380
    canvas = Image.new("L", (text_w + g.shape[1], g.shape[0]), 255)
    canvas.paste(Image.fromarray(g, mode="L"), (text_w, 0))
    draw = ImageDraw.Draw(canvas)
    for r, p in enumerate(prompts):
        draw.text((4, r * h * scale + h * scale // 2 - 6), p[:62], fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)
    return prompts


def measure(n: int = 1000, steps: int = 50, guidance_scale: float = 1.5, seed: int = 0, batch_size: int = 250,
            weights_dir: Path | None = None, grid: Path | None = None, progress: bool = True) -> dict:
    from bench.evaluation.gates import real_halves
    from bench.embedded.classifier import predict
    from bench.embedded.extractor import NAME
    from bench.embedded.loader import WEIGHTS_DIR as DIGITS_WEIGHTS
    from bench.embedded.loader import load_classifier
    from bench.embedded.t2i.captions import prompt_set
    from bench.embedded.t2i.loader import load_t2i
    from bench.models.embedded_t2i import load_embedded_t2i
    from bench.quality import Extractor, fidelity

    model = load_t2i(weights_dir, verify=True)
    bundle = load_embedded_t2i(str(model.path))
    scorer = scorer_for(model)
    t0 = time.perf_counter()
    real = real_clip_figures(scorer)
    t_real = time.perf_counter() - t0

    prompts, digits = prompt_set(n, "heldout")
    seeds = list(range(seed, seed + n))
    t0, c0 = time.perf_counter(), time.process_time()
    samples = generate(bundle, prompts, seeds, steps, guidance_scale, batch_size, progress)
    t_sample, c_sample = time.perf_counter() - t0, time.process_time() - c0

    classifier = load_classifier()
    pred, _ = predict(classifier, samples)
    accuracy = (pred == torch.tensor(digits)).float().mean().item()
    clip_samples = scorer(samples, prompts)["clip_score"]
    clip_real = scorer(paired_real(digits), prompts)["clip_score"]
    half_a, half_b = real_halves(0)
    m = min(n, half_a.shape[0])
    extractor = Extractor(NAME, DIGITS_WEIGHTS / "classifier.safetensors", cuda=False)

    def fid(images):
        return fidelity(images, half_b, ("fid",), extractor=extractor, reference_source=None,
                        batch_size=METRIC_BATCH)["fid"]

    fid_samples, fid_real = fid(samples[:m]), fid(half_a[:m])
    passed = dict(zero_shot=real["zero_shot"] >= GATES["zero_shot_min"],
                  prompt_accuracy=accuracy >= GATES["prompt_accuracy_min"],
                  clip_ratio=clip_samples / clip_real >= GATES["clip_ratio_min"],
                  fid_ratio=fid_samples / fid_real <= GATES["fid_ratio_max"])
    grid_prompts = grid_png(bundle, Path(grid), steps, guidance_scale) if grid is not None else None
    return dict(
        protocol=dict(n=n, sampler=f"PLMS {steps} steps (grid {steps + 1}), batched CFG", guidance_scale=guidance_scale,
                      seeds=f"{seed}-{seed + n - 1}", prompts="held-out templates, prompt i asks for digit i % 10",
                      clip=f"{model.manifest['clip']['model_name']} via bench.quality.clip_score.ClipScorer",
                      classifier="digits-cnn (bench/embedded/weights/classifier.safetensors)",
                      fid=f"digits-cnn, {m} samples vs real half B; {m} of real half A vs half B"),
        gates=GATES,
        real=real,
        prompt_accuracy=accuracy,
        clip=dict(samples=clip_samples, real_same_prompts=clip_real, ratio=clip_samples / clip_real),
        fid=dict(n=m, samples_vs_half_b=fid_samples, half_a_vs_half_b=fid_real, ratio=fid_samples / fid_real),
        cost=dict(sampling_s=round(t_sample, 1), s_per_image=t_sample / n, cpu_s_per_image=c_sample / n,
                  threads=torch.get_num_threads(), batch_size=batch_size, real_clip_s=round(t_real, 2)),
        grid_prompts=grid_prompts,
        passed=passed,
        all_passed=all(passed.values()),
    )


def format_report(r: dict) -> str:
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    p, g, real, c, f = r["passed"], r["gates"], r["real"], r["clip"], r["fid"]
    return "\n".join([
        f"embedded-t2i quality gates: n={r['protocol']['n']}, {r['protocol']['sampler']}, "
        f"CFG scale {r['protocol']['guidance_scale']}",
        f"  [{ok(p['zero_shot'])}] scoring CLIP zero-shot accuracy (held-out digits x held-out templates) "
        f"{real['zero_shot']:.4f} (>= {g['zero_shot_min']})",
        f"  [info] CLIP score real digits: own caption {real['clip_own']:.2f}, wrong digit's caption "
        f"{real['clip_wrong']:.2f}, gap {real['clip_gap']:.2f}",
        f"  [{ok(p['prompt_accuracy'])}] samples classified as the prompted digit {r['prompt_accuracy']:.4f} "
        f"(>= {g['prompt_accuracy_min']})",
        f"  [{ok(p['clip_ratio'])}] CLIP score samples {c['samples']:.2f} / real with the same prompts "
        f"{c['real_same_prompts']:.2f} = {c['ratio']:.3f} (>= {g['clip_ratio_min']})",
        f"  [{ok(p['fid_ratio'])}] FID samples {f['samples_vs_half_b']:.2f} / real halves {f['half_a_vs_half_b']:.2f}"
        f" = {f['ratio']:.2f} at {f['n']} images each (<= {g['fid_ratio_max']})",
        f"  cost: {r['cost']['s_per_image'] * 1000:.1f} ms wall / {r['cost']['cpu_s_per_image'] * 1000:.1f} ms CPU per "
        f"image ({r['cost']['threads']} threads, batch {r['cost']['batch_size']})",
        f"  all gates: {ok(r['all_passed'])}",
    ])

