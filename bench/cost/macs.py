"""MACs of every step type per preset (fvcore, ``paper`` and ``complete`` conventions), cached on disk.

The public entry point of MAC counting: :func:`preset_table` returns a preset's :class:`MacsTable`, from the disk
cache (``$FLEXBENCH_CACHE/macs``, JSON, atomic writes) when the stored key matches, else measured and saved.  The
key holds the preset's architecture and inputs, the step engine's source and the versions of everything that
produced the count.  Concepts live in their own modules and are re-exported here: operator handles
(:mod:`bench.cost.handles`), one traced call (:mod:`bench.cost.counting`), the per-preset table
(:mod:`bench.cost.table`), CSV and figure (:mod:`bench.cost.export`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from flexiffusion.environment import library_version
from flexiffusion.io import atomic_write_json

from .counting import COMPLETE, CONVENTIONS, PAPER, Call, G, OpCount, check_convention, count_call
from .export import CSV_COLUMNS, plot_branches, write_csv
from .handles import EXTRA_OPS, attention_macs, cdist_handle, sdpa_handle
from .table import MacsRow, MacsTable, measure_preset

__all__ = ["COMPLETE", "CONVENTIONS", "PAPER", "G", "EXTRA_OPS", "CSV_COLUMNS", "Call", "OpCount", "MacsRow",
           "MacsTable", "attention_macs", "sdpa_handle", "cdist_handle", "check_convention", "count_call",
           "measure_preset", "preset_table", "cache_key", "cache_root", "write_csv", "plot_branches"]

# Bump when the counting procedure changes (invalidates cached tables).
COUNTER_VERSION = 1


def _source_digest(module_name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return "missing"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]


def cache_key(name: str) -> dict:
    """What a preset's counts depend on: its architecture and inputs, the engine, and library versions."""
    from bench.presets import get_preset

    preset = get_preset(name)
    return json.loads(json.dumps({
        "preset": name, "counter": COUNTER_VERSION,
        "unet": [preset.unet_class, preset.config()], "sample_shape": preset.sample_shape,
        "context_shape": preset.context_shape, "num_classes": preset.num_classes, "guidance": preset.guidance,
        "parts": [[p.kind, p.cls, dict(p.config), p.input_shape] for p in preset.parts],
        "engine": _source_digest("flexiffusion.engine"),
        "versions": {d: library_version(d) for d in ("torch", "diffusers", "fvcore", "transformers")},
    }, sort_keys=True, default=str))


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$FLEXBENCH_CACHE/macs``, else ``~/.cache/flexiffusion-bench/macs``."""
    if root is not None:
        return Path(root)
    base = os.environ.get("FLEXBENCH_CACHE") or "~/.cache/flexiffusion-bench"
    return Path(os.path.expanduser(base)) / "macs"


def _cache_path(root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{key['preset']}-{digest}.json"


def preset_table(name: str, cache: str | os.PathLike | None | bool = None, refresh: bool = False,
                 progress: bool = False) -> MacsTable:
    """The MACs table of preset ``name``, from the disk cache when its key matches, else measured and saved.
    ``cache=False`` disables the disk cache; a path overrides its location."""
    key = cache_key(name)
    path = None if cache is False else _cache_path(cache_root(None if cache is True else cache), key)
    if path is not None and not refresh and path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = None
        if data is not None and data.get("key") == key:  # the stored key guards against collisions
            return MacsTable.from_dict(data)
    table = measure_preset(name, progress)
    table.key = key
    if path is not None:
        atomic_write_json(path, table.to_dict(), indent=1)
    return table
