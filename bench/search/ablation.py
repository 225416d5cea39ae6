"""How many images does a fitness metric need to rank candidates? (Flexiffusion Tables 4 and 9, Sec. 5.5 / app. F).

``N`` random candidates are drawn (seeded) from a search space.  Each is sampled **once** at ``K`` images (the
largest image count asked for, or the reference's count if larger); the metric with ``k < K`` images uses the
first ``k`` images of that run (seeds ``first_seed .. first_seed + k - 1``), which are exactly the images a
``k``-image run would produce (per-sample seeds), so every ``k`` comes from one sampling pass (image-prefix reuse).
Across candidates the evaluator's sampler-state prefix reuse applies as in the search.

Per candidate and ``k``: rFID (FID between the candidate's first ``k`` images and the teacher's first ``k``, same
seeds), FID (the candidate's first ``k`` images against **all** of the real data, a fixed reference: for ``k`` above
the real set's size the real side stays the whole set, only the generated side grows) and pixel MSE against the
teacher.  The **reference ranking** is FID against the real data with ``reference_images`` generated images; its
own noise is the Kendall tau between the reference rankings of the two disjoint halves of those images.

Every candidate's values are committed to the results store as one result as soon as they are computed (key
``ablation/<evaluation setting>/real=<real data>/<plan digest>``), so a killed run resumes with nothing done
recomputed.  The summary (Kendall's tau by ``scipy.stats.kendalltau``, tau-b, with its p-value, and seconds per
candidate) is one result ``ablation-summary/<setting>/real=<real>/<hash of the candidates and the config>`` of
experiment ``ablation-summary``: per metric (the row's ``method``: rfid / fid / mse) and image count k (its
``n_images``) the metrics ``k_images``, ``s_per_candidate``, ``kendall_tau``, ``kendall_p``, ``reference_tau`` (the
reference's own half-vs-half tau, the same in every row) and ``n_candidates``.  Tables 4 (every metric and k) and 9
(rFID by k) render from those rows (bench/experiments/specs/table4.toml, table9.toml).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import numpy as np

from flexiffusion.errors import UserError

METRICS = ("rfid", "fid", "mse")
NAMES = {"rfid": "rFID", "fid": "FID", "mse": "MSE"}   # a summary row's label: NAME-k
RESULT_PREFIX = "ablation"
SUMMARY_PREFIX = "ablation-summary"
SUMMARY_EXPERIMENT = "ablation-summary"


@dataclass(frozen=True)
class AblationConfig:
    preset: str = "embedded-50"
    candidates: int = 20
    ks: tuple[int, ...] = (100, 200, 500, 1000)
    reference_images: int | None = None   # None: max(ks)
    seed: int = 0                         # the candidate draw
    first_seed: int = 0                   # the first image seed

    def __post_init__(self):
        ks = tuple(sorted({int(k) for k in self.ks}))
        object.__setattr__(self, "ks", ks)
        if not ks or ks[0] < 2:
            raise UserError(f"--k: every image count must be >= 2 (FID needs a covariance); got {list(self.ks)}")
        if self.candidates < 3:
            raise UserError(f"--candidates must be >= 3 for a ranking correlation; got {self.candidates}")
        if self.reference_images is not None and self.reference_images < 4:
            raise UserError(f"--reference-images must be >= 4 (two halves of >= 2); got {self.reference_images}")

    @property
    def n_reference(self) -> int:
        return self.reference_images if self.reference_images is not None else self.ks[-1]

    @property
    def n_sampled(self) -> int:
        return max(self.ks[-1], self.n_reference)


class Source(Protocol):
    """What the ablation needs from a model: the teacher's and real data's references and one candidate's images.

    ``teacher()`` -> (uint8 images, float features) of the teacher, ``n_sampled`` of each; ``real()`` -> a
    :class:`~bench.evaluation.frechet.FixedReferenceFID` of all real images; ``candidate(plan)`` -> (images,
    features, {"sampling_s", "features_s"}) for the same seeds; ``key`` names the setting."""

    key: str

    def teacher(self): ...
    def real(self): ...
    def candidate(self, plan): ...


def draw_candidates(space, n: int, seed: int) -> list:
    """``n`` distinct (by plan digest) uniform draws of ``space`` (:meth:`SearchSpace.random`), seeded."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for _ in range(100 * n):
        c = space.random(rng)
        d = space.digest(c)
        if d not in seen:
            seen.add(d)
            out.append(c)
            if len(out) == n:
                return out
    raise UserError(f"the space has fewer than {n} distinct plans reachable: ask for fewer --candidates")


def candidate_values(images, features, teacher_images, teacher_features, real, ks, n_reference) -> dict:
    """``{(metric, k): value}`` for every metric and k, plus ``(fid_reference, N)`` and the halves'
    ``(fid_half_a, N//2)`` / ``(fid_half_b, N//2)``; with the seconds each metric's distance took."""
    from bench.evaluation.frechet import FixedReferenceFID
    from bench.quality.features import fid_statistics
    from bench.quality.pixel import mse

    import warnings

    out, seconds = {}, {}
    feats = np.asarray(features, dtype=np.float64)
    tfeats = np.asarray(teacher_features, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k <= d: singular covariances are the point of the small-k rows
        import torch

        for k in ks:
            t0 = time.perf_counter()
            teacher_ref = FixedReferenceFID(fid_statistics(torch.from_numpy(tfeats[:k])))
            out[("rfid", k)] = teacher_ref.from_features(feats[:k])
            t1 = time.perf_counter()
            out[("fid", k)] = real.from_features(feats[:k])
            t2 = time.perf_counter()
            out[("mse", k)] = mse(images[:k], teacher_images[:k])["mse"]
            t3 = time.perf_counter()
            seconds.update({("rfid", k): t1 - t0, ("fid", k): t2 - t1, ("mse", k): t3 - t2})
    half = n_reference // 2
    out[("fid_reference", n_reference)] = real.from_features(feats[:n_reference])
    out[("fid_half_a", half)] = real.from_features(feats[:half])
    out[("fid_half_b", half)] = real.from_features(feats[half:2 * half])
    return {"values": out, "distance_s": seconds}


def _rows(values: dict, common: dict) -> list[dict]:
    return [{**common, "metric": m, "n_images": int(k), "value": float(v)} for (m, k), v in values.items()]


def evaluate_candidates(config: AblationConfig, space, source: Source, store, progress: Callable | None = None):
    """Values of every drawn candidate: read from ``store`` or computed and committed one candidate at a time.
    Returns (list of per-candidate dicts, number newly computed)."""
    from bench.results import result_key

    candidates = draw_candidates(space, config.candidates, config.seed)
    refs: list = []   # (teacher, real), made when the first candidate is computed
    records, new = [], 0
    for i, cand in enumerate(candidates):
        plan = space.compile(cand)

        def compute(plan=plan, cand=cand, i=i):
            if not refs:
                refs.append((source.teacher(), source.real()))
            teacher, real = refs[0]
            images, features, timing = source.candidate(plan)
            got = candidate_values(images, features, teacher[0], teacher[1], real, config.ks, config.n_reference)
            values = dict(got["values"])
            n = config.n_sampled
            for (m, k), s in got["distance_s"].items():  # sampling and features are linear in images: scaled
                values[(f"seconds_{m}", k)] = (timing["sampling_s"] + timing["features_s"]) * k / n + s
            values[("sampling_s", n)] = timing["sampling_s"]
            values[("features_s", n)] = timing["features_s"]
            common = {"experiment": "ablation", "method": "random-candidate", "plan_digest": plan.digest(),
                      "plan": plan.to_dict(), "grid": len(plan),
                      "seeds": f"{config.first_seed}-{config.first_seed + n - 1}",
                      "extra": {"candidate": cand.key(), "index": i, "config": asdict(config)}}
            common.update(source.row_fields if hasattr(source, "row_fields") else {})
            return _rows(values, common)

        result, reused = store.get_or_put(result_key(RESULT_PREFIX, *source.key.split("/"), plan.digest()), compute)
        rows = result.rows
        new += not reused
        records.append({"candidate": cand.key(), "digest": plan.digest(),
                        **{(r["metric"], r["n_images"]): r["value"] for r in rows}})
        if progress is not None:
            progress(i + 1, new)
    return records, new


def summarize(records: list[dict], config: AblationConfig) -> dict:
    """Kendall's tau (tau-b, p-value) of each metric at each k against the reference ranking, the reference's own
    noise (tau between its two disjoint halves), and mean seconds per candidate."""
    from bench.quality.ranking import kendall_tau

    N = config.n_reference
    ref = [r[("fid_reference", N)] for r in records]
    noise = kendall_tau([r[("fid_half_a", N // 2)] for r in records], [r[("fid_half_b", N // 2)] for r in records])
    table = []
    for m in METRICS:
        for k in config.ks:
            t = kendall_tau([r[(m, k)] for r in records], ref)
            table.append({"metric": m, "k": k, "kendall_tau": t["kendall_tau"], "p_value": t["p_value"],
                          "s_per_candidate": float(np.mean([r[(f"seconds_{m}", k)] for r in records])),
                          "n_candidates": t["n_candidates"]})
    return {"table": table, "reference_images": N, "reference_noise": noise}


# summary table column -> registered metric (bench.results) of its store row
SUMMARY_METRICS = {"k": "k_images", "s_per_candidate": "s_per_candidate", "kendall_tau": "kendall_tau",
                   "p_value": "kendall_p", "n_candidates": "n_candidates"}


def _value(v):
    v = float(v)
    return None if np.isnan(v) else v


def summary_rows(summary: dict, config: AblationConfig, base: dict) -> list[dict]:
    """Tidy store rows of experiment ``ablation-summary``, one group per metric (``method``) and k (``n_images``):
    ``k_images``, ``s_per_candidate``, ``kendall_tau``, ``kendall_p``, ``n_candidates`` of that metric at that k and
    the reference's own half-vs-half ``reference_tau``; NaN (a constant ranking) is stored as no value."""
    rows = []
    noise = summary["reference_noise"]
    extra = {"reference_images": summary["reference_images"], "reference_noise": noise, "config": asdict(config)}
    for t in summary["table"]:
        common = {**base, "experiment": SUMMARY_EXPERIMENT, "method": t["metric"], "n_images": int(t["k"]),
                  "extra": {**extra, "label": f"{NAMES[t['metric']]}-{t['k']}"}}
        for column, metric in SUMMARY_METRICS.items():
            rows.append({**common, "metric": metric, "value": _value(t[column])})
        rows.append({**common, "metric": "reference_tau", "value": _value(noise["kendall_tau"])})
    return rows


def store_summary(store, summary: dict, config: AblationConfig, records: list[dict], source, base: dict):
    """The summary's rows (:func:`summary_rows`) as one result (``(Result, reused)``); its key names the setting,
    the candidates (digests) and the whole config, so another image count, reference or draw is another result."""
    from bench.cache import stable_hash
    from bench.results import result_key

    digest = stable_hash({"candidates": [r["digest"] for r in records], "config": asdict(config)})
    key = result_key(SUMMARY_PREFIX, *source.key.split("/"), digest)
    return store.get_or_put(key, lambda: summary_rows(summary, config, base))


def frame(summary: dict):
    import pandas as pd

    return pd.DataFrame(summary["table"])


def plot(summary: dict, path) -> None:
    """Kendall tau vs image count, one line per metric (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = frame(summary)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, g in df.groupby("metric", sort=False):
        ax.plot(g["k"], g["kendall_tau"], marker="o", label=m)
    noise = summary["reference_noise"]["kendall_tau"]
    ax.axhline(noise, ls="--", c="gray", lw=1, label=f"reference halves ({summary['reference_images'] // 2} each)")
    ax.set_xscale("log")
    ax.set_xlabel("images per candidate (k)")
    ax.set_ylabel(f"Kendall tau vs FID-{summary['reference_images']}")
    ax.set_ylim(-1, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class EvaluatorSource:
    """The real :class:`Source`: the search's :class:`~bench.evaluation.evaluator.Evaluator` at ``n_sampled``
    images (teacher = the all-full plan, same seeds; real = all digits, cached features)."""

    def __init__(self, setting, space, cache_dir=None, real: str = "digits-all"):
        from bench.evaluation.evaluator import Evaluator

        self.setting, self.real_name, self.cache_dir = setting, real, cache_dir
        self.evaluator = Evaluator(setting, cache_branches=space.branches, cache_dir=cache_dir)
        self.key = f"{setting.key()}/real={real}"
        e = self.evaluator
        self.row_fields = {"model": e.bundle.name, "weights": e.bundle.weights_id, "scheduler": setting.scheduler,
                           "device": setting.device,
                           **({"threads": setting.threads} if setting.threads is not None else {})}

    def _features(self, images):
        from bench.quality.images import as_images

        imageset = as_images(images, "candidate")
        return self.evaluator.extractor.extract(imageset, imageset.shape[0], (self.evaluator.layer,),
                                                self.setting.batch_size)[self.evaluator.layer]

    def teacher(self):
        t = self.evaluator.teacher()
        return t.teacher_images().tensor(), t.teacher_features().features(self.evaluator.layer)

    def real(self):
        from bench.cache import Cache
        from bench.evaluation.frechet import FixedReferenceFID
        from bench.quality.features import FeatureSet
        from bench.quality.reference import fid_dim_of, resolve_real
        from bench.quality.statistics import ReferenceStatistics

        reference, label = resolve_real(self.real_name, "real")
        if isinstance(reference, ReferenceStatistics):   # torch-fidelity statistics: the fixed reference as given
            reference.require_dim(fid_dim_of(self.evaluator.extractor)[1], self.evaluator.extractor.name)
            self.n_real = reference.n_images
            return FixedReferenceFID(reference.as_dict())
        fs = FeatureSet(reference, self.evaluator.extractor, [self.evaluator.layer], source=label,
                        cache=Cache(self.cache_dir), batch_size=self.setting.batch_size)
        self.n_real = fs.n
        return FixedReferenceFID(fs.statistics(self.evaluator.layer))

    def candidate(self, plan):
        from flexiffusion.threads import num_threads

        with num_threads(self.setting.threads):
            t0 = time.perf_counter()
            images, info = self.evaluator.images(plan)
            t1 = time.perf_counter()
            features = self._features(images)
            t2 = time.perf_counter()
        return images, features, {"sampling_s": t1 - t0 - info["io_s"], "features_s": t2 - t1}
