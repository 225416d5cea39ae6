"""The smoke matrix (issue 22, item 3; ``flexbench smoke``): the paper models' path through the real commands only,
from random-weight folders in the real diffusers layouts at the real architectures (reduced sample sizes, stated in
each folder's ``flexbench_fixture.json``).  This is the ``ci`` tier (``.ci/run`` runs it after the default run):
Fig. B.1 on every model that declares it, Fig. 4 and Table 5 on ``ddpm-cifar10``, and per paper model a search +
``flexbench sample`` of its best plan and one ``flexbench run`` row on a short grid.  ``flexbench smoke --tier full``
runs every spec on every paper model (hours on 2 CPU cores: bench/commands/smoke.py says why).  The numbers are
meaningless; the path is what is proven."""
from __future__ import annotations

import pytest

from bench.commands.smoke import CLIP_MODEL, check_spec, matrix, plan, search_and_sample, short_row
from bench.models.catalog import PAPER_MODELS

CI = plan("ci")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from bench.models.fixtures import build_all

    root = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEXBENCH_CACHE", str(root / "cache"))   # teachers and features: not the user's cache
        yield root, build_all(root / "fixtures", list(PAPER_MODELS), clip_model=CLIP_MODEL)


def test_the_tiers_cover_every_paper_model_and_spec():
    from bench.experiments.spec import known, load

    full = matrix()
    assert {(n, m) for n in known() for m in load(n).models if m in PAPER_MODELS} == set(full)
    assert {m for _, m in CI} == set(PAPER_MODELS)
    assert {n for n, _ in CI} - {"search+sample", "row"} == {"figB1", "fig4", "table5"}   # quality tables: full tier
    assert {(k, m) for k, m in CI if k in ("search+sample", "row")} == {
        (k, m) for k in ("search+sample", "row") for m in PAPER_MODELS}


@pytest.mark.slow
@pytest.mark.parametrize("kind,model", CI)
def test_smoke_case(kind, model, smoke):
    root, fx = smoke
    with (root / "smoke.log").open("a") as f:
        log = lambda line: f.write(line + "\n")   # noqa: E731
        problems = (search_and_sample(model, fx, root, log, images=2) if kind == "search+sample"
                    else short_row(model, fx, root, log) if kind == "row"
                    else check_spec(kind, model, fx, root, log))
    assert problems == [], f"{kind} on {model}: {problems}"
