"""The ranking yardstick of the search's evaluation modes (issue: search cost): how well does a cheap or fast
evaluation rank candidates, against a large-n exact reference, and against the noise of the exact mode itself?

Candidates: ``candidates`` distinct plans of the preset's space, half uniform random draws
(:func:`bench.search.ablation.draw_candidates`) and half the population of a short real search (Algorithm 1 at
``search_images`` images per candidate, so near-ties between good candidates are included).

Image seeds (per-sample seeds: image i depends on seed i only):

* set A = ``0 .. n - 1`` (n = the largest image count asked for): what a search evaluates; every mode samples it;
* set R = ``n .. n + N - 1`` (N = ``reference_images``): the **reference**, exact fp32 rFID on R against the teacher's
  R images, one value per candidate, ranking the candidates;
* set B = the first n images of R: exact fp32 on B against the teacher's B images gives the **noise floor**: tau
  between the exact rankings on A and on B at the same image count (two disjoint seed sets).

Per mode and image count k (the first k images of A): Kendall's tau (tau-b, scipy) of the mode's ranking against the
reference, with a bootstrap interval over candidates (resampled with replacement); and the paired bootstrap of its
difference to exact fp32 at the same k.  A mode is **admissible** at k when that difference is not significantly
below zero (the 95 % interval's upper end >= 0).  Modes: ``exact`` (eager fp32), ``bf16`` (autocast), ``bf16-weights``
(weights cast to bfloat16), ``channels_last``, ``compile``; each non-exact mode samples set A with its own teacher
in the same mode.  ``screened`` is derived from the exact values (no sampling): the fast mode's rule
(:mod:`bench.search.screening`) applied at its stages with the other candidates as the population, so a stopped
candidate keeps its stage value.

It also measures the noise that sets the fast mode's margin: ``sigma_log_diff`` at each k, the SD over candidate
pairs of ``(log r_A(i) - log r_A(j)) - (log r_B(i) - log r_B(j))`` divided by sqrt 2 (the SD of one paired log rFID
difference between two candidates on one image set).

Every candidate's features of every set are cached on disk (the evaluation cache), so a killed run resumes; the
summary is one result in the results store (``search-yardstick/<setting>/<hash of candidates and config>``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from flexiffusion.errors import UserError

MODES = ("exact", "bf16", "bf16-weights", "channels_last", "compile")
DERIVED = ("screened",)
RESULT_PREFIX = "search-yardstick"


@dataclass(frozen=True)
class YardstickConfig:
    preset: str = "embedded-50"
    candidates: int = 30
    ks: tuple[int, ...] = (32, 96, 250)
    reference_images: int = 1000
    modes: tuple[str, ...] = ("exact",)
    seed: int = 0                 # candidate draw and the short search
    search_images: int = 32       # images per candidate of the short search giving half the candidates
    search_iterations: int = 4
    bootstrap: int = 1000
    screen_z: tuple[float, ...] = (2.0,)   # margins of the derived ``screened`` rows (units of the measured sigma)
    n_p: int | None = None                 # parents per draw for the screening rule (None: the preset's)

    def __post_init__(self):
        object.__setattr__(self, "ks", tuple(sorted({int(k) for k in self.ks})))
        object.__setattr__(self, "modes", tuple(dict.fromkeys(("exact",) + tuple(self.modes))))
        object.__setattr__(self, "screen_z", tuple(float(z) for z in self.screen_z))
        if any(z < 0 for z in self.screen_z) or (self.n_p is not None and self.n_p < 2):
            raise UserError(f"--screen-z values must be >= 0 and --n-p >= 2; got {list(self.screen_z)}, {self.n_p}")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise UserError(f"unknown yardstick mode(s) {', '.join(bad)}: choose from {', '.join(MODES)}")
        if self.ks[0] < 4:
            raise UserError(f"--k: image counts must be >= 4, got {list(self.ks)}")
        if self.candidates < 6:
            raise UserError(f"--candidates must be >= 6 for a ranking with an interval (the issue asks >= 30); "
                            f"got {self.candidates}")
        if self.reference_images < self.ks[-1]:
            raise UserError(f"--reference-images ({self.reference_images}) must be >= the largest image count "
                            f"({self.ks[-1]}): set B is the reference's first images")

    @property
    def n(self) -> int:
        return self.ks[-1]

    @property
    def total_images(self) -> int:
        return self.n + self.reference_images


def mode_of(name: str):
    """The :class:`ExecutionMode` of a yardstick mode name."""
    from bench.evaluation.setting import ExecutionMode

    return {"exact": ExecutionMode(), "bf16": ExecutionMode(dtype="bf16"),
            "bf16-weights": ExecutionMode(dtype="bf16-weights"), "channels_last": ExecutionMode(channels_last=True),
            "compile": ExecutionMode(compile=True)}[name]


# ---- statistics (model-free) ---------------------------------------------------------------------------------------
def _tau(a, b) -> float:
    from scipy.stats import kendalltau

    t = kendalltau(a, b).statistic
    return float(t) if t == t else 0.0


def bootstrap_taus(values: dict, reference, n_boot: int, seed: int = 0) -> dict:
    """``{name: (tau, lo, hi, diff_lo, diff_hi)}``: tau of each value list against ``reference``, its 95 % bootstrap
    interval over candidates, and the interval of its paired difference to ``values["exact"]`` (same resamples)."""
    rng = np.random.default_rng(seed)
    ref = np.asarray(reference, dtype=np.float64)
    n = ref.size
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    boots = {k: [] for k in arrays}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for k, a in arrays.items():
            boots[k].append(_tau(a[idx], ref[idx]))
    out = {}
    base = np.asarray(boots.get("exact", [0.0] * n_boot))
    for k, a in arrays.items():
        b = np.asarray(boots[k])
        d = b - base
        out[k] = (_tau(a, ref), *np.percentile(b, [2.5, 97.5]), *np.percentile(d, [2.5, 97.5]))
    return out


def sigma_log_diff(a, b) -> float:
    """SD of one paired log rFID difference between two candidates on one image set, from their values on two
    disjoint sets ``a`` and ``b`` (all candidate pairs)."""
    la, lb = np.log(np.maximum(np.asarray(a, float), 1e-12)), np.log(np.maximum(np.asarray(b, float), 1e-12))
    i, j = np.triu_indices(la.size, 1)
    d = (la[i] - la[j]) - (lb[i] - lb[j])
    return float(np.std(d, ddof=1) / math.sqrt(2))


def screened_values(stage_values: dict, full, n_p: int, screen) -> tuple[list[float], int]:
    """The fast mode's rule on a fixed set: each candidate in turn against the others as the population (ordered by
    their full values), stopped at the first stage where ``log v > log v_r + margin``; ``(values, stopped)``."""
    from .screening import _log, parent_fraction

    f = parent_fraction(n_p, screen.epsilon)
    full = list(full)
    out, stopped = [], 0
    for i in range(len(full)):
        value = full[i]
        for k in sorted(stage_values):
            others = sorted(v for j, v in enumerate(stage_values[k]) if j != i)
            pos = math.ceil(f * len(others))
            if pos < len(others) and _log(stage_values[k][i]) > _log(others[pos]) + screen.margin(k):
                value, stopped = stage_values[k][i], stopped + 1
                break
        out.append(value)
    return out, stopped


def summarize(records: list[dict], config: YardstickConfig, n_p: int, screen=None) -> dict:
    """The yardstick table from per-candidate values (``records[i][(mode, set, k)]`` and ``("exact", "R", N)``)."""
    from .screening import ScreenConfig

    screen = screen or ScreenConfig()
    ref = [r[("exact", "R", config.reference_images)] for r in records]
    table, noise, sigmas = [], {}, {}
    for k in config.ks:
        values = {m: [r[(m, "A", k)] for r in records] for m in config.modes}
        taus = bootstrap_taus(values, ref, config.bootstrap, config.seed)
        exact_b = [r[("exact", "B", k)] for r in records]
        noise[k] = _tau(values["exact"], exact_b)
        sigmas[k] = sigma_log_diff(values["exact"], exact_b)
        for m, (t, lo, hi, dlo, dhi) in taus.items():
            table.append({"mode": m, "k": k, "kendall_tau": t, "tau_lo": lo, "tau_hi": hi, "diff_lo": dlo,
                          "diff_hi": dhi, "admissible": bool(m == "exact" or dhi >= 0), "noise_floor_tau": noise[k]})
    # the fast mode's rule on this set, at the largest k with its stages below it, for each margin z
    stages = {k: [r[("exact", "A", k)] for r in records] for k in screen.stages if k in config.ks and k < config.n}
    if stages:
        from dataclasses import replace

        full = [r[("exact", "A", config.n)] for r in records]
        for z in config.screen_z:
            sv, stopped = screened_values(stages, full, n_p, replace(screen, z=z))
            t = bootstrap_taus({"exact": full, "screened": sv}, ref, config.bootstrap, config.seed)
            tau, lo, hi, dlo, dhi = t["screened"]
            table.append({"mode": f"screened z{z:g}", "k": config.n, "kendall_tau": tau, "tau_lo": lo,
                          "tau_hi": hi, "diff_lo": dlo, "diff_hi": dhi, "admissible": bool(dhi >= 0),
                          "noise_floor_tau": noise[config.n], "stopped": stopped, "z": z})
    return {"table": table, "noise_floor_tau": noise, "sigma_log_diff": sigmas,
            "reference_images": config.reference_images, "n_candidates": len(records)}


def format_table(summary: dict) -> str:
    lines = [f"{'mode':15s} {'k':>5s} {'tau vs ref':>10s} {'95% interval':>16s} {'diff vs exact':>18s} "
             f"{'noise floor':>11s}  admissible"]
    for r in summary["table"]:
        extra = f"  ({r['stopped']} of {summary['n_candidates']} stopped early)" if "stopped" in r else ""
        lines.append(f"{r['mode']:15s} {r['k']:5d} {r['kendall_tau']:10.3f} [{r['tau_lo']:6.3f}, {r['tau_hi']:6.3f}] "
                     f"[{r['diff_lo']:+7.3f}, {r['diff_hi']:+7.3f}] {r['noise_floor_tau']:11.3f}  "
                     f"{'yes' if r['admissible'] else 'NO'}{extra}")
    lines.append("sigma of a paired log-rFID difference (sets the fast mode's margin): " + ", ".join(
        f"{k} images {v:.3f}" for k, v in summary["sigma_log_diff"].items()))
    return "\n".join(lines)


# ---- sampling ------------------------------------------------------------------------------------------------------
def search_population(preset, space, cost, budget, setting, config: YardstickConfig, cache_dir=None) -> list:
    """Candidates of a short real search (Algorithm 1 at ``search_images`` images, the preset's settings otherwise):
    its final population, best first."""
    from dataclasses import replace

    from flexiffusion.search.evolution import evolve

    from bench.evaluation.evaluator import Evaluator

    from .setup import search_config

    small = replace(setting, seeds=tuple(range(config.search_images)), batch_size=config.search_images)
    ev = Evaluator(small, cache_branches=space.branches, cache_dir=cache_dir).prepare()
    evo = search_config(preset, iterations=config.search_iterations, seed=config.seed)
    result = evolve(space, space.plan_cost(cost.step_macs), ev, budget, evo)
    return [e.candidate for e in result.population]


def choose_candidates(space, population: list, n: int, seed: int) -> list:
    """Half (rounded up) from ``population`` (best first), the rest uniform random draws; distinct plans."""
    from .ablation import draw_candidates

    out, seen = [], set()
    for c in population:
        d = space.digest(c)
        if d not in seen and len(out) < (n + 1) // 2:
            seen.add(d)
            out.append(c)
    for c in draw_candidates(space, 4 * n, seed):
        if len(out) >= n:
            break
        d = space.digest(c)
        if d not in seen:
            seen.add(d)
            out.append(c)
    return out


class ModeSampler:
    """Features of set A (and for ``exact`` also R) of candidates in one mode, cached on disk per candidate."""

    def __init__(self, setting, space, mode: str, n_images: int, cache_dir=None):
        from dataclasses import replace

        from bench.cache import Cache
        from bench.evaluation.evaluator import Evaluator

        self.name = mode
        self.setting = replace(setting, seeds=tuple(range(n_images)), mode=mode_of(mode))
        self.evaluator = Evaluator(self.setting, cache_branches=space.branches, cache_dir=cache_dir)
        self.cache = Cache(cache_dir)
        self.key = self.setting.key()

    def teacher_features(self) -> torch.Tensor:
        t = self.evaluator.teacher()
        return torch.as_tensor(t.teacher_features().features(self.evaluator.layer))

    def features(self, plan) -> torch.Tensor:
        def compute():
            images, _ = self.evaluator.images(plan)
            return torch.as_tensor(self.evaluator.features(images))

        return self.cache.get_or_compute("yardstick-features", {"setting": self.key, "plan": plan.digest()}, compute)


class TeacherRefs:
    """The teacher's reference statistics over image ranges, each computed once (its covariance root is the costly
    part: a d x d eigenproblem) and shared by every candidate; ``refs(mode, lo, hi)``."""

    def __init__(self, teachers: dict):
        self.teachers, self._refs = teachers, {}

    def __call__(self, mode: str, lo: int, hi: int):
        if (mode, lo, hi) not in self._refs:
            import warnings

            from bench.evaluation.frechet import FixedReferenceFID
            from bench.quality.features import fid_statistics

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = torch.as_tensor(self.teachers[mode][lo:hi], dtype=torch.float64)
                self._refs[(mode, lo, hi)] = FixedReferenceFID(fid_statistics(t))
        return self._refs[(mode, lo, hi)]


def rfid(features, ref, lo: int, hi: int) -> float:
    """rFID of the candidate's images ``lo .. hi - 1`` against ``ref`` (the teacher's same images)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref.from_features(np.asarray(features[lo:hi], dtype=np.float64))


def candidate_record(samplers: dict, refs: TeacherRefs, plan, config: YardstickConfig) -> dict:
    """``{(mode, set, k): rFID}`` of one candidate: every mode on A's first k, exact on B's first k and on R."""
    n, N = config.n, config.reference_images
    rec = {}
    for m, s in samplers.items():
        f = s.features(plan)
        for k in config.ks:
            rec[(m, "A", k)] = rfid(f, refs(m, 0, k), 0, k)
        if m == "exact":
            for k in config.ks:
                rec[(m, "B", k)] = rfid(f, refs(m, n, n + k), n, n + k)
            rec[(m, "R", N)] = rfid(f, refs(m, n, n + N), n, n + N)
    return rec


def run_yardstick(config: YardstickConfig, setting, cache_dir=None, progress=None) -> dict:
    """Candidates, per-candidate values in every mode, the summary (:func:`summarize`)."""
    from dataclasses import replace

    from .presets import get_preset
    from .screening import ScreenConfig
    from .setup import search_config, space_of

    preset = get_preset(config.preset)
    space, cost, budget = space_of(preset)
    n_p = config.n_p or search_config(preset).parents
    population = search_population(preset, space, cost, budget, setting, config, cache_dir)
    cands = choose_candidates(space, population, config.candidates, config.seed)
    if len(cands) < config.candidates:
        raise UserError(f"only {len(cands)} distinct candidates found: ask for fewer --candidates")
    base = replace(setting, batch_size=min(setting.batch_size, config.n))
    samplers = {"exact": ModeSampler(base, space, "exact", config.total_images, cache_dir)}
    for m in config.modes[1:]:
        samplers[m] = ModeSampler(base, space, m, config.n, cache_dir)
    refs = TeacherRefs({m: s.teacher_features() for m, s in samplers.items()})
    records = []
    for i, c in enumerate(cands):
        plan = space.compile(c)
        records.append({"candidate": c.key(), "digest": plan.digest(), "from_search": i < (config.candidates + 1) // 2,
                        **candidate_record(samplers, refs, plan, config)})
        if progress is not None:
            progress(i + 1)
    summary = summarize(records, config, n_p, ScreenConfig())
    summary.update(config=asdict(config), n_p=n_p, setting_key=samplers["exact"].key,
                   candidates=[{"candidate": r["candidate"], "digest": r["digest"], "from_search": r["from_search"],
                                "reference_rfid": r[("exact", "R", config.reference_images)]} for r in records])
    return summary
