"""docs/architecture.md describes the code as it is: every package it names exists, every package is in it, and
its layer table lists the layers of tests/test_layers.py in the same order."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
ROOTS = ("flexiffusion", "bench", "baselines", "reports")


def _packages() -> set[str]:
    return {str(p.parent.relative_to(ROOT)) + "/" for r in ROOTS for p in (ROOT / r).rglob("__init__.py")
            if "weights" not in p.parts}


def _named() -> set[str]:
    return {m for m in re.findall(r"`((?:%s)(?:/[a-z0-9_]+)*/)`" % "|".join(ROOTS), DOC)}


def test_every_package_is_described():
    missing = sorted(_packages() - _named())
    assert missing == [], f"docs/architecture.md does not describe {missing}"


def test_every_package_named_exists():
    ghosts = sorted(p for p in _named() if not (ROOT / p / "__init__.py").is_file())
    assert ghosts == [], f"docs/architecture.md names packages that do not exist: {ghosts}"


def test_every_module_named_exists():
    ghosts = sorted(m for m in re.findall(r"`((?:%s)(?:/[a-z0-9_]+)+\.py)`" % "|".join(ROOTS), DOC)
                    if not (ROOT / m).is_file())
    assert ghosts == [], f"docs/architecture.md names modules that do not exist: {ghosts}"


def test_the_layer_table_follows_the_enforced_order():
    from test_layers import LAYERS

    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", DOC, flags=re.M)
    assert [name.strip() for _, name in rows] == [name for name, _ in LAYERS]
