"""The common harness of method rows: one method run (plan + scheduler + hooks + cost) measured on one model into
tidy rows of the results store (bench/store.py), the same way for every method.

Metrics of a row (one store row each):

* ``nfe``: U-Net evaluations per image, *measured* (forward calls of the U-Net counted during generation, per
  batch); ``grid``: timesteps of the method's grid;
* ``macs_paper_g`` / ``macs_complete_g``: total U-Net MACs per image in G, both conventions of bench.cost
  (paper = fvcore at batch 1 without attention matmuls; complete = with them, doubled under CFG), counted by the
  method's own cost function on the model as it runs (ToMe applied, layers dropped);
* ``avg_macs_paper_g`` / ``avg_macs_complete_g``: total / the teacher's number of steps (``teacher_steps``, the
  table's "default number of time steps"; :func:`flexiffusion.schedule.avg_macs`, Flexiffusion's avg MACs);
  ``speedup_paper`` / ``speedup_complete`` = teacher total / method total (the paper: speed-up by MACs);
* ``generation_s_per_image``: wall time of the row's generation pass / its images (the row's ``threads`` and
  ``device`` are those it ran with);
* ``peak_memory_mib``: the peak memory of that pass (:class:`bench.cost.memory.PeakMemory`: on CUDA
  ``max_memory_allocated``, on the CPU the process's peak resident set size; what was read under
  ``extra["memory"]``); ``cache_kib_per_image``: the most the step engine's feature cache held at once during it
  (:class:`bench.cost.memory.CacheProbe`, every cache context) / the images of its largest batch (0 for plans
  without partial steps);
* its own result (:func:`measure_latency`, key :func:`latency_key`, which covers device and threads; measured only
  where a table shows it): ``latency_s_per_image`` / ``latency_iqr_s_per_image``, a controlled measurement with the
  latency harness (bench.cost.timing): the method generates the first ``LATENCY_IMAGES`` seeds as one batch, after
  ``LATENCY_WARMUP`` warm-up runs, ``LATENCY_REPEATS`` times; median and interquartile range per image (raw values
  under ``extra["latency"]``);
* ``fid``, ``isc``, ``precision``, ``recall`` against the real data (``real``), ``rfid`` against the teacher
  (DDIM, ``teacher_steps`` full steps, the same seeds), ``clip_score`` for text models.  ``real`` may be FID
  statistics (an ``.npz`` with ``mu`` / ``sigma``, :mod:`bench.quality.statistics`): FID and IS as usual, while
  precision / recall, which need the real images' features, store the text ``"needs real images"``
  (:data:`bench.quality.reference.NEEDS_REAL_IMAGES`, what a table cell shows) and ``extra["quality_note"]`` says
  why; a bootstrap spread of FID then resamples the generated images only (``extra["bootstrap"]["fid_over"]``);
* ``psnr_db``, ``ssim``, ``lpips``: each image against the teacher's image of the same seed, the mean over images
  (:mod:`bench.quality.similarity`; with a bootstrap spread: intervals of the means over images).  PSNR is inf for
  images equal to the teacher's (the teacher itself); LPIPS is the text ``"needs <file>"`` without its backbone's
  local weights file (how LPIPS was measured under ``extra["similarity"]``).

A row's store key (``row/<model>/<label>/<hash>``, :func:`bench.results.result_key`) covers the model weights
(:func:`bench.models.weights_identity`), the method and its config, the plan, the scheduler and the
:class:`RowSetting`; a result already stored under it is returned, not recomputed (``ResultStore.get_or_put``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from flexiffusion.errors import UserError
from baselines.run import Run  # noqa: F401  (what a method hands measure(); re-exported)

ROWS_VERSION = 4           # bump when what a row measures changes (new keys; old results stay readable)
                           # 2: text models costed at their own context length (was 77 tokens)
                           # 3: latency from the latency harness (+ IQR, generation wall time), threads as measured,
                           #    keys row/<model>/<label>/<hash> with the weights' content identity
                           # 4: PSNR / SSIM / LPIPS against the teacher, peak memory, cache bytes per image
EXPERIMENT = "baselines"
MIN_ROW_IMAGES = 10        # Inception Score uses 10 splits
LATENCY_IMAGES = 8         # the latency measurement's batch: the row's first seeds
LATENCY_WARMUP = 1
LATENCY_REPEATS = 5
LPIPS_NET = "alex"         # LPIPS backbone of rows (bench.quality.similarity)
G = 1e9


@dataclass(frozen=True)
class RowSetting:
    """How every row is measured; part of the store key."""

    n_images: int = 1000
    seed0: int = 0
    teacher_steps: int = 100
    real: str = "digits-all"
    extractor: str = "digits-cnn"
    batch_size: int = 250
    prompts: tuple[str, ...] = ()    # text models: one prompt per image, or one for all
    clip_model: str | None = None         # CLIP score model (None: the bundle's scoring CLIP, else ViT-B-32)
    clip_pretrained: str | None = None    # its weights tag or file (None: the bundle's, else "openai")
    guidance_scale: float | None = None   # classifier-free guidance of every row and the teacher (None: unguided)
    extractor_weights: str | None = None  # the extractor's weights file (None: its default, looked up locally)

    def validate(self) -> "RowSetting":
        if self.n_images < MIN_ROW_IMAGES:
            raise UserError(f"a row needs at least {MIN_ROW_IMAGES} images (IS uses 10 splits), got {self.n_images}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.teacher_steps < 1:
            raise UserError(f"teacher steps must be >= 1, got {self.teacher_steps}")
        if self.guidance_scale is not None and not self.guidance_scale > 0:
            raise UserError(f"guidance scale must be > 0, got {self.guidance_scale}")
        return self

    def key_fields(self) -> dict:
        """The setting as part of a row key (an unguided setting keys as before guidance was a field, one without
        extractor weights as before they were).  Extractor weights and a statistics file as ``real`` key by their
        content (:func:`bench.quality.reference.file_identity`), not their path."""
        from bench.quality.reference import file_identity
        from bench.quality.statistics import is_statistics_path

        d = asdict(self)
        for name in ("guidance_scale", "extractor_weights"):
            if d[name] is None:
                del d[name]
        if self.extractor_weights is not None:
            d["extractor_weights"] = file_identity(self.extractor_weights)
        if is_statistics_path(self.real) and Path(self.real).is_file():   # (a missing one fails when read)
            d["real"] = f"statistics:{file_identity(self.real)}"
        return d

    def reference(self):
        """The :class:`bench.quality.reference.QualityReference` this setting measures against (prompts are the
        setting's own, not a file)."""
        from bench.quality.reference import QualityReference

        return QualityReference(self.real, self.extractor, self.extractor_weights, self.clip_model,
                                self.clip_pretrained)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed0, self.seed0 + self.n_images))

    def prompt_list(self, bundle) -> list[str] | None:
        if bundle.conditioning != "text":
            return None
        if not self.prompts:
            raise UserError("a text-to-image model needs prompts: pass --prompt (or 'prompts' in the setting)")
        from bench.generate import expand_prompts

        return expand_prompts(self.prompts, self.n_images)


def _hash(obj) -> str:
    from bench.cache import stable_hash

    return stable_hash(obj)


def _part(text: str) -> str:
    """A label or model name as one key part (``/`` escaped)."""
    return str(text).replace("%", "%25").replace("/", "%2F") or "-"


def row_key(bundle, run: Run, setting: RowSetting, bootstrap: int = 0) -> str:
    from bench.models import weights_identity
    from bench.results import result_key

    ident = {"rows": ROWS_VERSION, "model": bundle.name, "weights": weights_identity(bundle), "method": run.method,
             "config": run.config, "plan": run.plan.digest(), "scheduler": run.scheduler_name,
             "setting": setting.key_fields()}
    if bootstrap:   # only then: keys of rows without a spread stay what they were
        ident["bootstrap"] = {"b": bootstrap, "interval": "normal", "level": 0.95}
    lpips = lpips_identity()
    if lpips:       # LPIPS's backbone weights are here: a row measures LPIPS with them (keyed by content)
        ident["lpips"] = lpips
    return result_key("row", _part(bundle.name), _part(run.label), _hash(json.loads(json.dumps(ident, default=str))))


def lpips_identity() -> str:
    """The content identity of LPIPS's local backbone weights, "" when they are not here."""
    from bench.quality.similarity import lpips_setting

    weights = lpips_setting(LPIPS_NET)["weights"]
    return "" if weights.startswith("needs ") else weights


def latency_key(bundle, run: Run, setting: RowSetting) -> str:
    """The key of a row's latency: what it ran (model, weights, method, plan, scheduler, the timed seeds, prompts and
    guidance) and where (device, torch threads now): a latency is reused only on the same device and thread count."""
    from bench.models import weights_identity
    from bench.results import result_key

    n = min(LATENCY_IMAGES, setting.n_images)
    ident = {"rows": ROWS_VERSION, "model": bundle.name, "weights": weights_identity(bundle), "method": run.method,
             "config": run.config, "plan": run.plan.digest(), "scheduler": run.scheduler_name,
             "seeds": setting.seeds[:n], "prompts": list(setting.prompts[:n]), "guidance": setting.guidance_scale,
             "warmup": LATENCY_WARMUP, "repeats": LATENCY_REPEATS, "device": str(bundle.device),
             "threads": torch.get_num_threads()}
    return result_key("latency", _part(bundle.name), _part(run.label), _hash(json.loads(json.dumps(ident, default=str))))


def measure_latency(bundle, run: Run, setting: RowSetting, store=None) -> tuple[list[dict], bool]:
    """``(rows, reused)``: the row's controlled latency (:func:`latency`) as its own result, from ``store`` when its
    key (:func:`latency_key`) is there; a table measures it only when it shows a latency column."""
    setting.validate()
    key = latency_key(bundle, run, setting)

    def compute():
        prompts = setting.prompt_list(bundle)
        threads = torch.get_num_threads()
        timed = latency(bundle, run, setting, prompts)
        lat = {"images": timed.batch_size, "warmup": LATENCY_WARMUP, "repeats": LATENCY_REPEATS,
               "values_s": timed.values, "timer": "cuda-events" if bundle.device.type == "cuda" else "perf_counter"}
        common = {"experiment": "latency", "method": run.label, "model": bundle.name, "weights": bundle.weights_id,
                  "plan_digest": run.plan.digest(), "plan": run.plan.to_dict(), "scheduler": run.scheduler_name,
                  "grid": len(run.plan), "n_images": timed.batch_size,
                  "seeds": f"{setting.seed0}-{setting.seed0 + timed.batch_size - 1}",
                  "device": str(bundle.device), "threads": threads, "extra": {"method": run.method, "latency": lat}}
        return [{**common, "metric": "latency_s_per_image", "value": float(timed.per_image)},
                {**common, "metric": "latency_iqr_s_per_image", "value": float(timed.iqr / timed.batch_size)}]

    if store is None:
        return compute(), False
    result, reused = store.get_or_put(key, compute)
    return list(result.rows), reused


def _label_of(key: str) -> str:
    """The label part of a row key (names the row's cached features)."""
    return key.split("/")[-2]


class _CallCounter:
    """Counts the U-Net's forward calls (a forward pre-hook, so every hook inside the call runs as usual)."""

    def __init__(self, unet):
        self.calls = 0
        self.handle = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def close(self):
        self.handle.remove()


def teacher_macs(bundle) -> dict:
    """One full step of the bundle's U-Net in both conventions (fvcore, counted once per bundle)."""
    from baselines.costing import bundle_cost_models

    return {c: m.full_macs for c, m in bundle_cost_models(bundle).items()}


def _generate(bundle, run: Run, setting: RowSetting, prompts, progress: bool):
    """``(images, NFE per batch, wall s, threads, memory)``: the row's generation pass; ``memory`` holds its peak
    (:class:`~bench.cost.memory.PeakMemory`) and the engine cache's most bytes (:class:`~bench.cost.memory.CacheProbe`)."""
    from bench.cost.memory import CacheProbe, PeakMemory
    from bench.generate import generate_images

    counter = _CallCounter(bundle.unet)
    batches = -(-setting.n_images // setting.batch_size)
    try:
        with run.hooks():
            threads = torch.get_num_threads()   # what the generation runs with (the caller's scope)
            with PeakMemory(bundle.device) as peak, CacheProbe(bundle.unet) as cache:
                t0 = time.perf_counter()
                images = generate_images(bundle, run.plan, setting.seeds, scheduler=run.scheduler, prompts=prompts,
                                         guidance_scale=setting.guidance_scale, batch_size=setting.batch_size,
                                         progress=progress, desc=run.label)
                wall = time.perf_counter() - t0
    finally:
        counter.close()
    memory = {**peak.record(), "cache_max_bytes": cache.max_bytes,
              "cache_batch_images": min(setting.batch_size, setting.n_images)}
    return images, counter.calls / batches, wall, threads, memory


def memory_values(memory: dict) -> dict:
    """``peak_memory_mib`` (the text saying why when it was not measurable) and ``cache_kib_per_image`` of a
    generation pass's ``memory`` record (:func:`_generate`)."""
    from bench.cost.memory import KIB, MIB

    peak = memory["peak_bytes"]
    return {"peak_memory_mib": memory["missing"] if peak is None else peak / MIB,
            "cache_kib_per_image": memory["cache_max_bytes"] / KIB / memory["cache_batch_images"]}


def similarity(images, teacher, b: int = 0) -> tuple[dict, dict]:
    """``(values, extra)``: mean PSNR / SSIM / LPIPS of ``images`` against the teacher's images of the same seeds
    (bench.quality.similarity) and, with ``b`` > 0, their bootstrap intervals over images (``_low`` / ``_high`` /
    ``_sd``; none for a mean with an inf, e.g. PSNR of the teacher itself); ``extra``: how they were measured."""
    from bench.quality import as_images
    from bench.quality.bootstrap import DEFAULT_LEVEL, bootstrap_mean
    from bench.quality.similarity import lpips_setting, mean, per_image

    values, per = {}, per_image(images, teacher, LPIPS_NET)
    for name, v in per.items():
        values[name] = mean(v)
        if b and not isinstance(v, str) and bool(np.isfinite(v).all()):
            s = bootstrap_mean(v, b=b, level=DEFAULT_LEVEL)
            values.update({f"{name}_low": s.low, f"{name}_high": s.high, f"{name}_sd": s.sd})
    psnr = per["psnr_db"]
    extra = {"psnr": "10 log10(1 / MSE) per image, data range 1, mean over images",
             "identical_images": int(np.isinf(psnr).sum()),
             "ssim": {"window": "gaussian 11", "sigma": 1.5, "k1": 0.01, "k2": 0.03, "data_range": 1.0},
             "lpips": lpips_setting(LPIPS_NET, as_images(images, "images").shape)}
    return values, extra


def latency(bundle, run: Run, setting: RowSetting, prompts):
    """The row's latency, controlled (bench.cost.timing): the first ``LATENCY_IMAGES`` seeds generated as one batch
    (decoded, as the row's images are), ``LATENCY_WARMUP`` warm-up runs then ``LATENCY_REPEATS`` timed runs (CUDA
    events on a GPU); a :class:`bench.cost.timing.Measurement` (``per_image`` = median / batch)."""
    from bench.cost.timing import Measurement, Timer, time_round_robin
    from bench.generate import generate_images

    n = min(LATENCY_IMAGES, setting.n_images)
    seeds, batch_prompts = setting.seeds[:n], None if prompts is None else prompts[:n]

    def once():
        generate_images(bundle, run.plan, seeds, scheduler=run.scheduler, prompts=batch_prompts,
                        guidance_scale=setting.guidance_scale, batch_size=n, progress=False)

    with run.hooks():
        timed = time_round_robin({run.label: once}, LATENCY_WARMUP, LATENCY_REPEATS, Timer(bundle.device))
    return Measurement(f"row:{run.label}", None, n, timed[run.label], calls=len(run.plan))


def scoring_clip(bundle, setting: RowSetting) -> tuple[str, str]:
    """(open_clip model, weights) of the CLIP score: the setting's, else the bundle's own scoring CLIP
    (``extras["scoring_clip"]``: embedded-t2i ships one), else ViT-B-32 / openai (SD's usual choice)."""
    own = bundle.extras.get("scoring_clip") or {}
    return (setting.clip_model or own.get("model") or "ViT-B-32",
            setting.clip_pretrained or own.get("pretrained") or "openai")


def quality(bundle, images, setting: RowSetting, rfid, prompts, cache_dir=None) -> dict:
    """FID / IS / precision / recall vs the real data, rFID vs the teacher, CLIP score for text models.  Against a
    statistics file precision and recall are :data:`~bench.quality.reference.NEEDS_REAL_IMAGES` (text)."""
    from bench.quality import fidelity
    from bench.quality.reference import NEEDS_REAL_IMAGES, resolve_real
    from bench.quality.statistics import ReferenceStatistics

    real, label = resolve_real(setting.real, "real")
    stats = isinstance(real, ReferenceStatistics)
    q = fidelity(images, real, ("fid", "isc") if stats else ("fid", "isc", "prc"), extractor=rfid.extractor,
                 reference_source=label, cache_dir=cache_dir)
    out = {"fid": q["fid"], "isc": q["isc_mean"], "precision": q.get("precision", NEEDS_REAL_IMAGES),
           "recall": q.get("recall", NEEDS_REAL_IMAGES), "rfid": rfid.score_images(images)["rfid"]}
    if prompts is not None:
        from bench.quality import ClipScorer

        model, pretrained = scoring_clip(bundle, setting)
        out["clip_score"] = ClipScorer(model, pretrained)(images, prompts)["clip_score"]
    return out


def teacher_rfid(bundle, setting: RowSetting, prompts, cache_dir=None, progress: bool = True):
    from bench.evaluation import relative_fid

    return relative_fid(bundle, setting.seeds, setting.teacher_steps, scheduler="ddim", prompts=prompts,
                        guidance_scale=setting.guidance_scale,
                        gen_batch_size=setting.batch_size, progress=progress, extractor=setting.extractor,
                        weights_path=setting.extractor_weights, cache_dir=cache_dir)


def spread(images, setting: RowSetting, rfid, key: str, b: int, cache_dir=None) -> dict:
    """Bootstrap intervals of FID and rFID over images (bench.quality.bootstrap); the image features are kept in
    the cache under the row key (stage ``row-features``) for paired comparisons between rows."""
    from bench.cache import Cache
    from bench.quality import FeatureSet, as_images
    from bench.quality.bootstrap import DEFAULT_LEVEL, bootstrap_fid, bootstrap_fid_statistics
    from bench.quality.reference import resolve_real
    from bench.quality.statistics import ReferenceStatistics

    layer = rfid.layer
    mine = FeatureSet(as_images(images, "method"), rfid.extractor, [layer]).features(layer)
    real, label = resolve_real(setting.real, "real")
    Cache(cache_dir).save("row-features", {"row": key}, mine, _label_of(key))
    out = {}
    if isinstance(real, ReferenceStatistics):   # no real features: resample the generated images only
        real.require_dim(mine.shape[1], rfid.extractor.name)
        s = bootstrap_fid_statistics(mine, real.as_dict(), b=b, level=DEFAULT_LEVEL)
        out.update({"fid_low": s.low, "fid_high": s.high, "fid_sd": s.sd})
        ref = None
    else:
        ref = FeatureSet(real, rfid.extractor, [layer], source=label, cache=Cache(cache_dir)).features(layer)
    for name, other in (("fid", ref), ("rfid", rfid.teacher_features().features(layer))):
        if other is None:
            continue
        s = bootstrap_fid(mine, other, b=b, level=DEFAULT_LEVEL, resample_reference=name == "fid")
        out.update({f"{name}_low": s.low, f"{name}_high": s.high, f"{name}_sd": s.sd})
    return out


def row_features(key: str, cache_dir=None):
    """The image features a row with a bootstrap spread kept (None if not in the cache)."""
    from bench.cache import Cache

    return Cache(cache_dir).load("row-features", {"row": key}, _label_of(key))


def is_teacher(run: Run, setting: RowSetting) -> bool:
    """Whether ``run`` samples exactly rFID's teacher (the registry's ``teacher``, no ToMe: all full DDIM steps on
    the teacher's grid): its images are then the reference's too, sampled once (timed as the row) when the cache
    does not hold them."""
    return (run.method == "teacher" and not (run.config or {}).get("tome") and run.scheduler == "ddim"
            and len(run.plan) == setting.teacher_steps and all(t == "f" for t in run.plan.tokens()))


def measure(bundle, run: Run, setting: RowSetting, store=None, cache_dir=None, progress: bool = True,
            bootstrap: int = 0, latency: bool = True) -> tuple[list[dict], bool]:
    """``(rows, reused)``: the run's rows, from ``store`` when its key is there, else measured (and stored).
    ``bootstrap`` = B > 0 adds intervals (95 %) of FID, rFID and the PSNR / SSIM / LPIPS means over B resamples of
    the images;
    ``latency``: the controlled latency's rows too (:func:`measure_latency`, its own result)."""
    setting.validate()
    key = row_key(bundle, run, setting, bootstrap)
    if store is None:
        rows, reused = _measured(bundle, run, setting, key, cache_dir, progress, bootstrap), False
    else:
        result, reused = store.get_or_put(key, lambda: _measured(bundle, run, setting, key, cache_dir, progress,
                                                                 bootstrap))
        rows = list(result.rows)
    if latency:
        timed, timed_reused = measure_latency(bundle, run, setting, store)
        rows, reused = rows + timed, reused and timed_reused
    return rows, reused


def _measured(bundle, run: Run, setting: RowSetting, key: str, cache_dir, progress: bool, bootstrap: int
              ) -> list[dict]:
    from bench.quality.reference import STATISTICS_NOTE
    from flexiffusion.schedule import avg_macs

    prompts = setting.prompt_list(bundle)
    rfid = teacher_rfid(bundle, setting, prompts, cache_dir, progress)
    if is_teacher(run, setting) and not rfid.has_teacher_images():
        images, nfe, wall, threads, memory = _generate(bundle, run, setting, prompts, progress)   # sampled once:
        rfid.provide_teacher_images(images)                                                      # row and reference
    else:
        rfid.teacher_features()  # the teacher's images are not part of the method's latency
        images, nfe, wall, threads, memory = _generate(bundle, run, setting, prompts, progress)
    macs, teacher = run.macs(), teacher_macs(bundle)
    if setting.guidance_scale is not None:   # batched CFG: each call runs the conditional and unconditional half;
        macs = {**macs, "complete": 2 * macs["complete"]}     # the paper's convention counts batch 1 (SD: 338.76 G)
        teacher = {**teacher, "complete": 2 * teacher["complete"]}
    teacher_total = {c: v * setting.teacher_steps for c, v in teacher.items()}
    values = {"nfe": nfe, "grid": len(run.plan)}
    for conv in ("paper", "complete"):
        values[f"macs_{conv}_g"] = macs[conv] / G
        values[f"avg_macs_{conv}_g"] = avg_macs(macs[conv], setting.teacher_steps) / G
        values[f"speedup_{conv}"] = teacher_total[conv] / macs[conv]
    values["generation_s_per_image"] = wall / setting.n_images
    values.update(memory_values(memory))
    values.update(quality(bundle, images, setting, rfid, prompts, cache_dir))
    # text where a statistics file holds no real images' features to measure against
    missing = sorted(m for m in ("precision", "recall") if isinstance(values.get(m), str))
    if bootstrap:
        values.update(spread(images, setting, rfid, key, bootstrap, cache_dir))
    close, how = similarity(images, rfid.teacher_images(), bootstrap)
    values.update(close)
    boot = {"b": bootstrap, "level": 0.95, "interval": "normal", "over": "images"}
    if bootstrap and missing:
        boot["fid_over"] = "generated images only (the real data is a statistics file)"
    common = {"experiment": EXPERIMENT, "method": run.label, "model": bundle.name, "weights": bundle.weights_id,
              "plan_digest": run.plan.digest(), "plan": run.plan.to_dict(), "scheduler": run.scheduler_name,
              "grid": len(run.plan), "n_images": setting.n_images,
              "seeds": f"{setting.seed0}-{setting.seed0 + setting.n_images - 1}",
              "device": str(bundle.device), "threads": threads,
              "extra": {"method": run.method, "config": run.config, "setting": asdict(setting),
                        "memory": memory, "similarity": how, **run.extra, **({"bootstrap": boot} if bootstrap else {}),
                        **({"quality_note": f"{STATISTICS_NOTE} ({setting.real})", "not_measured": missing}
                           if missing else {})}}
    return [{**common, "metric": m, "value": v if isinstance(v, str) else float(v)} for m, v in values.items()]


def as_record(rows: list[dict]) -> dict:
    """One flat dict of a result's rows: label, method, config, and every metric by name."""
    first = rows[0]
    out = {"label": first["method"], "method": first["extra"]["method"], "n_images": first["n_images"],
           "scheduler": first["scheduler"], "threads": first["threads"], "device": first["device"]}
    out.update({r["metric"]: r["value"] for r in rows})
    return out
