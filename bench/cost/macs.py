"""MACs of every step type per preset (fvcore, ``paper`` and ``complete`` conventions), cached on disk.

The public entry point of MAC counting: :func:`preset_table` returns a preset's :class:`MacsTable`, from the suite's
disk cache (:class:`bench.cache.Cache`: ``$FLEXBENCH_CACHE/macs``, JSON, atomic writes) when the stored key matches,
else measured and saved.  The
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

from bench.cache import Cache
from flexiffusion.environment import library_version

from .counting import COMPLETE, CONVENTIONS, PAPER, Call, G, OpCount, check_convention, count_call
from .export import CSV_COLUMNS, plot_branches, write_csv
from .handles import EXTRA_OPS, attention_macs, cdist_handle, sdpa_handle
from .table import MacsRow, MacsTable, measure_preset

__all__ = ["COMPLETE", "CONVENTIONS", "PAPER", "G", "EXTRA_OPS", "CSV_COLUMNS", "Call", "OpCount", "MacsRow",
           "MacsTable", "attention_macs", "sdpa_handle", "cdist_handle", "check_convention", "count_call",
           "measure_preset", "preset_table", "cache_key", "write_csv", "plot_branches"]

# Bump when the counting procedure changes (invalidates cached tables).
COUNTER_VERSION = 1
CACHE_STAGE = "macs"


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


def preset_table(name: str, cache: str | os.PathLike | None | bool = None, refresh: bool = False,
                 progress: bool = False) -> MacsTable:
    """The MACs table of preset ``name``, from the suite's disk cache (:class:`bench.cache.Cache`, stage ``macs``,
    JSON) when its key matches, else measured and saved.  ``cache=False`` disables it; a path is the cache root."""
    key = cache_key(name)
    store = Cache(None if cache in (None, True, False) else cache, enabled=cache is not False)
    data = None if refresh else store.load(CACHE_STAGE, key, name, fmt="json")
    if data is not None:
        return MacsTable.from_dict(data)
    table = measure_preset(name, progress)
    table.key = key
    store.save(CACHE_STAGE, key, table.to_dict(), name, fmt="json")
    return table
