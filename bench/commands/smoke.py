"""``flexbench smoke``: the paper models' path proven end to end on random weights (the smoke matrix).

For each paper model (``ddpm-cifar10``, ``ddpm-bedroom``, ``ddpm-church``, ``ldm-4-g``, ``sd-v1.5``) it builds a
folder in the model's real diffusers layout at its real architecture with random weights (a reduced ``sample_size``
where the full resolution is too slow on a CPU: each folder's ``flexbench_fixture.json`` says which), a random
Inception file in torch-fidelity's format, a random open_clip file, real-image folders of each model's image shape
and a prompts file (:mod:`bench.models.fixtures`).  Then, through the real commands only (``bench.cli.main``):

1. every experiment spec on every paper model it declares, at tiny sizes: ``flexbench experiment`` renders; every
   cell is a number or ``<why> [n]`` with footnote n the command that fills it; those commands (searches,
   ablations) run as printed with the fixture's files and smoke sizes; the experiment again: every cell a number;
2. per paper model, ``flexbench search`` on its first preset and ``flexbench sample`` of the best plan it wrote.

The numbers are meaningless (random weights); the path is what is proven.  Exit 1 when any check fails (the
summary names it).  The shipped models run the same way in ``tests/test_specs_from_writers.py``.

Tiers.  On 2 CPU cores one U-Net call at batch 10 of these real architectures (reduced sizes) costs 0.12 s (DDPM
CIFAR-10 at 8x8), 0.96 s (LSUN at 32x32), 0.71 s (LDM-4-G at 8x8 latents, twice that under guidance) and 2.5 s
(SD v1.5 at 8x8 latents, before guidance): the ``full`` matrix is hours there (minutes on a GPU).  The ``ci`` tier
(CI's slow tier) keeps every path at CPU cost: Fig. B.1 (the cost path) on every model that declares it, Fig. 4 and
Table 5 (a filled_by table over a search) on ``ddpm-cifar10``; per paper model a search + sample at 2 images, and one
``flexbench run`` row on a short grid (FID / IS / precision / recall against real images with Inception features,
rFID, CLIP score for SD).
"""
from __future__ import annotations

import contextlib
import io
import shlex
import time
from pathlib import Path

from flexiffusion.errors import UserError

CLIP_MODEL = "ViT-B-32"   # the random CLIP file's architecture (SD's default ViT-g-14 would be a 5 GB file)
ROWS = ["--images", "10", "--bootstrap", "2", "--quiet", "--threads", "2"]
# appended to a writer's command (argparse keeps the last value of an option)
SMOKE = {
    "search": ["--images", "10", "--iterations", "1", "--initial", "2", "--children", "1", "--parents", "1",
               "--batch-size", "10"],
    "ablation": ["--candidates", "3", "--k", "4,8", "--reference-images", "10", "--batch-size", "10"],
}
# per-spec flags of `flexbench experiment` (a row that searches inside it: AutoDiffusion at its smallest)
SPEC_FLAGS = {"table2": ["--set", "autodiffusion.search_images=8", "--set",
                         'autodiffusion.evolution={"population": 3, "top_k": 1, "mutation": 2, "crossover": 1, '
                         '"epochs": 1, "stage1_epochs": 1, "ramp_epochs": 1}']}


def register(sub) -> None:
    p = sub.add_parser("smoke", help="every experiment spec on every paper model, from random-weight real-layout "
                                     "folders (the paper models' path, proven end to end)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/smoke", help="fixtures, store and outputs (default runs/smoke)")
    p.add_argument("--models", default=None, help="comma-separated paper models (default: all)")
    p.add_argument("--specs", default=None, help="comma-separated experiment specs (default: all)")
    p.add_argument("--tier", default="full", choices=("full", "ci"),
                   help="full: every spec on every paper model (hours on a CPU); ci: the paths at CPU cost (see above)")
    p.add_argument("--no-search", action="store_true", help="skip step 2 (search + sample per model)")
    p.set_defaults(func=run)


def _main(argv: list[str]) -> tuple[int, str]:
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue() + err.getvalue()


def _step(argv: list, log) -> str:
    """Run one ``flexbench`` command line in-process and log it: "" when it exits 0, else what went wrong."""
    rc, text = _main(argv)
    log(f"flexbench {shlex.join(map(str, argv))} -> {rc}")
    if not rc:
        return ""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return f"`flexbench {argv[0]}` exited {rc}: {last}"


def _model_flags(model: str, fx: dict, writer: str, quality: bool = True) -> list[str]:
    """The fixture's files as a command's flags (the weights; real data, extractor, CLIP, prompts as it takes)."""
    from bench.models.catalog import get_model

    entry = get_model(model)
    flags = ["--weights", fx["models"][model]]
    if writer == "sample":
        return flags + (["--prompts", fx["prompts"]] if entry.text else [])
    if writer in ("experiment", "ablation", "search") and quality:
        flags += ["--extractor-weights", fx["inception"]]
        if writer != "search":
            flags += ["--real", fx["real"][model]]
        if entry.text:
            flags += ["--prompts", fx["prompts"]]
            if writer == "experiment":
                flags += ["--clip-model", CLIP_MODEL, "--clip-pretrained", fx["open_clip"]]
    return flags


def _writer_words(command: str, store: Path) -> list[str]:
    """The words after ``flexbench`` of a footnoted command, without its comment and placeholders."""
    text = command.split(", then ")[0].split("   #")[0].replace("FILE", str(store))
    words = shlex.split(text)[1:]
    for placeholder in ("--weights", "--real"):   # PATH / REAL: the fixture's, added by _model_flags
        while placeholder in words:
            i = words.index(placeholder)
            del words[i:i + 2]
    return words


def check_spec(name: str, model: str, fx: dict, root: Path, log) -> list[str]:
    """Fill and check one spec on one model (see the module docstring); the problems found ([] = green)."""
    from bench.experiments.spec import load
    from bench.cli import parse_invocation
    from reports.check import read_table, unfilled

    spec = load(name, parse_invocation)
    store, out = root / f"{model}.sqlite", root / "out" / model
    quality = spec.measures == "rows" and bool(spec.rows)
    experiment = ["experiment", name, "--model", model, *_model_flags(model, fx, "experiment", quality), *ROWS,
                  *SPEC_FLAGS.get(name, []), "--store", store, "--out"]
    failed = _step([*experiment, out / "before"], log)
    if failed:
        return [failed]
    problems, used = unfilled(read_table(out / "before" / name), spec.columns, model)
    if problems:
        return problems
    for i, command in enumerate(dict.fromkeys(used.values())):
        words = _writer_words(command, store)
        writer = words[0] if words else ""
        if writer not in SMOKE:
            return [f"no smoke size known for the writer of {command!r}"]
        failed = _step([*words, *_model_flags(model, fx, writer), *SMOKE[writer], "--threads", "2",
                        "--out", out / f"{name}-{writer}-{i}"], log)
        if failed:
            return [failed]
    failed = _step([*experiment, out / "after"], log)
    if failed:
        return [f"after its writers: {failed}"]
    problems, used = unfilled(read_table(out / "after" / name), spec.columns, model)
    writers_left = {n: c for n, c in used.items() if c != spec.filled_by}
    if spec.filled_by:   # a filled_by table keeps naming its writer; that is not a gap
        writers_left = {n: c for n, c in writers_left.items() if not c.startswith(spec.filled_by.split(" --")[0])}
    return problems + [f"still unfilled after its writers: {c}" for c in writers_left.values()]


def search_and_sample(model: str, fx: dict, root: Path, log, images: int = 10) -> list[str]:
    """``flexbench search`` on the model's first preset at smoke size, then ``flexbench sample`` of its best plan."""
    from bench.experiments.models import default_preset

    preset = default_preset(model)
    out = root / "out" / model / "search"
    argv = ["search", "--preset", preset, "--seed", "0", *_model_flags(model, fx, "search"), *SMOKE["search"],
            "--images", str(images), "--batch-size", str(images), "--threads", "2", "--store", root / f"{model}.sqlite", "--name", f"smoke-{preset}", "--out", out]
    failed = _step(argv, log)
    if failed:
        return [failed]
    from bench.search.presets import get_preset

    p = get_preset(preset)
    argv = ["sample", "--model", model, *_model_flags(model, fx, "sample"), "--plan", out / "best.json",
            "--steps", str(p.steps), "--seeds", "0-1", "--device", "cpu", "--out", root / "out" / model / "samples",
            "--overwrite"]
    failed = _step(argv, log)
    return [failed] if failed else []


def short_row(model: str, fx: dict, root: Path, log) -> list[str]:
    """One ``flexbench run`` row on a short grid (10 images, 4 steps, teacher 4 steps): every quality metric of
    the model's reference (FID / IS / precision / recall against real images, rFID, CLIP score for text models)."""
    from bench.models.catalog import get_model

    method = ["plms", "--steps", "4"] if get_model(model).text else ["deepcache", "--steps", "4", "--interval", "2",
                                                                      "--branch", "1"]
    argv = ["run", *method, "--model", model, *_model_flags(model, fx, "experiment"), "--images", "10",
            "--teacher-steps", "4", "--batch-size", "10", "--threads", "2", "--quiet",
            "--store", root / f"{model}.sqlite"]
    failed = _step(argv, log)
    return [failed] if failed else []


# The ci tier's specs: Fig. B.1 (the cost path) on every model that declares it; on ddpm-cifar10 (the cheapest U-Net
# call) fig4 (feature similarity) and table5 (a filled_by table over a search).  The tables of quality rows are left
# to the full tier: each row computes FIDs of 2048-d Inception features (scipy's sqrtm of a 2048 x 2048 matrix,
# about 20 s per FID on 2 cores), which the ci tier's one row per model already exercises.
CI_SPECS = {"figB1": None, "fig4": ("ddpm-cifar10",), "table5": ("ddpm-cifar10",)}


def plan(tier: str, models=None, specs=None) -> list[tuple[str, str]]:
    """The cases of a tier: (spec, model) pairs, then ("search+sample", model) and ("row", model) per model."""
    from bench.models.catalog import PAPER_MODELS

    cases = matrix(models, specs)
    if tier == "ci":
        cases = [(n, m) for n, m in cases if n in CI_SPECS and (CI_SPECS[n] is None or m in CI_SPECS[n])]
    wanted = [m for m in PAPER_MODELS if m in set(models or PAPER_MODELS)]
    return cases + [("search+sample", m) for m in wanted] + [("row", m) for m in wanted]


def matrix(models=None, specs=None) -> list[tuple[str, str]]:
    """(spec, model) of every spec and paper model it declares (filtered by ``models`` / ``specs``)."""
    from bench.experiments.spec import known, load
    from bench.models.catalog import PAPER_MODELS

    wanted = set(models or PAPER_MODELS)
    bad = wanted - set(PAPER_MODELS)
    if bad:
        raise UserError(f"--models {', '.join(sorted(bad))}: the smoke matrix runs the paper models "
                        f"{', '.join(PAPER_MODELS)}")
    names = specs or known()
    unknown = set(names) - set(known())
    if unknown:
        raise UserError(f"--specs {', '.join(sorted(unknown))}: not an experiment (flexbench experiment --list)")
    return [(n, m) for n in names for m in load(n).models if m in wanted]


def run(args) -> int:
    from tqdm.auto import tqdm

    from bench.models.fixtures import build_all

    models = [m.strip() for m in args.models.split(",")] if args.models else None
    specs = [s.strip() for s in args.specs.split(",")] if args.specs else None
    cases = [c for c in plan(args.tier, models, specs) if not (args.no_search and c[0] == "search+sample")]
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "smoke.log"
    search_images = 2 if args.tier == "ci" else 10
    with open(log_path, "a") as log_file:
        def log(line):
            log_file.write(line + "\n")
            log_file.flush()

        wanted = sorted({m for _, m in cases})
        t0 = time.perf_counter()
        fx = build_all(root / "fixtures", wanted, clip_model=CLIP_MODEL)
        print(f"fixtures under {root / 'fixtures'} ({time.perf_counter() - t0:.0f} s): random weights, real "
              "layouts; numbers below are meaningless, the path is what is proven")
        results = []
        for kind, model in tqdm(cases, desc="smoke", unit="case"):
            t = time.perf_counter()
            try:
                problems = (search_and_sample(model, fx, root, log, search_images) if kind == "search+sample"
                            else short_row(model, fx, root, log) if kind == "row"
                            else check_spec(kind, model, fx, root, log))
            except Exception as exc:   # a crash is a finding of the matrix, not the end of it
                problems = [f"{type(exc).__name__}: {exc}"]
            results.append((kind, model, problems, time.perf_counter() - t))
            log(f"{kind} on {model}: {'ok' if not problems else '; '.join(problems)} ({time.perf_counter() - t:.0f} s)")
    print(f"{'case':14s} {'model':13s} {'s':>6s}  result")
    for kind, model, problems, secs in results:
        print(f"{kind:14s} {model:13s} {secs:6.0f}  {'ok' if not problems else problems[0]}")
        for p in problems[1:]:
            print(f"{'':36s}{p}")
    bad = sum(bool(p) for _, _, p, _ in results)
    print(f"{len(results) - bad} of {len(results)} green ({args.tier} tier); log {log_path}")
    return 1 if bad else 0
