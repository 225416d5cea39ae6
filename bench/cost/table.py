"""Per-preset MACs table: every step type (full, partial(b), null) and the per-image parts, in both conventions.

A partial step at branch ``b`` is traced with :class:`flexiffusion.engine.StepEngine` after a full step has filled
its cache, so the count is what the engine really runs (deeper modules return cached tensors: no ops).  The
``complete`` convention is per image: doubled when the model is sampled with classifier-free guidance (the U-Net
runs on the conditional and unconditional batch), with the text encoder (per prompt) and the decoder (per image) on
separate lines.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flexiffusion.errors import UserError

from .counting import COMPLETE, CONVENTIONS, PAPER, G, check_convention, count_call


@dataclass(frozen=True)
class MacsRow:
    preset: str
    step: str              # "full", "partial", "null", "text_encoder", "decoder"
    branch: int | None
    convention: str
    macs_g: float
    fraction_of_full: float

    def as_dict(self) -> dict:
        return {"preset": self.preset, "step": self.step, "branch": "" if self.branch is None else self.branch,
                "convention": self.convention, "macs_g": self.macs_g, "fraction_of_full": self.fraction_of_full}


@dataclass
class MacsTable:
    """Raw counts of one preset at batch 1: ``counts[key] = (total, attention, cdist)``, keys ``full``,
    ``partial:<b>``, ``text_encoder``, ``decoder``; conventions are derived from them."""

    preset: str
    num_branches: int
    guidance: bool
    counts: dict[str, tuple[int, int, int]]
    key: dict = field(default_factory=dict)

    # -- derived numbers --
    def unet_macs(self, step: str, branch: int | None = None, convention: str = PAPER) -> int:
        """MACs of one U-Net step (``full`` / ``partial`` at ``branch`` / ``null``) for one image."""
        check_convention(convention)
        if step == "null":
            return 0
        if step == "full":
            key = "full"
        elif step == "partial":
            if branch is None or not 1 <= branch <= self.num_branches:
                raise UserError(f"branch {branch} out of range: {self.preset} has branches 1..{self.num_branches}")
            key = f"partial:{branch}"
        else:
            raise UserError(f"unknown step {step!r}: use full, partial or null")
        total, attn, cdist = self.counts[key]
        if convention == PAPER:
            return total - attn - cdist
        return total * (2 if self.guidance else 1)

    def part_macs(self, kind: str) -> int | None:
        """Complete-convention MACs of a text encoder (per prompt) or decoder (per image); None if absent."""
        c = self.counts.get(kind)
        return None if c is None else c[0]

    def lookup(self, convention: str = PAPER) -> list[int]:
        """MACs per step type, indexed ``0 = null, b = partial(b), B + 1 = full`` (see schedule_cost)."""
        return ([0] + [self.unet_macs("partial", b, convention) for b in range(1, self.num_branches + 1)]
                + [self.unet_macs("full", None, convention)])

    def rows(self) -> list[MacsRow]:
        out = []
        for conv in CONVENTIONS:
            full = self.unet_macs("full", None, conv)
            steps = [("null", None)] + [("partial", b) for b in range(1, self.num_branches + 1)] + [("full", None)]
            for step, b in steps:
                m = self.unet_macs(step, b, conv)
                out.append(MacsRow(self.preset, step, b, conv, m / G, m / full))
            if conv == COMPLETE:
                for kind in ("text_encoder", "decoder"):
                    m = self.part_macs(kind)
                    if m is not None:
                        out.append(MacsRow(self.preset, kind, None, conv, m / G, m / full))
        return out

    def fractions(self, convention: str = PAPER) -> list[float]:
        """Fraction of a full step's MACs computed by partial(b), b = 1..B."""
        full = self.unet_macs("full", None, convention)
        return [self.unet_macs("partial", b, convention) / full for b in range(1, self.num_branches + 1)]

    # -- serialisation --
    def to_dict(self) -> dict:
        return {"preset": self.preset, "num_branches": self.num_branches, "guidance": self.guidance,
                "counts": {k: list(v) for k, v in self.counts.items()}, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> "MacsTable":
        return cls(d["preset"], int(d["num_branches"]), bool(d["guidance"]),
                   {k: tuple(int(x) for x in v) for k, v in d["counts"].items()}, d.get("key", {}))


def measure_preset(name: str, progress: bool = False) -> MacsTable:
    """Count every step type of preset ``name`` (full, partial 1..B via the step engine, parts); no caching."""
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    from bench.presets import get_preset

    preset = get_preset(name)
    unet = preset.build_unet()
    sample, t, kwargs = preset.example_inputs(batch_size=1)
    static = {"return_dict": False}
    counts: dict[str, tuple[int, int, int]] = {}
    engine = StepEngine.attach(unet)
    try:
        steps = [Step.full()] + [Step.partial(b) for b in range(1, engine.num_branches + 1)]
        for step in _progress(steps, f"MACs {name}", progress):
            # The full step is traced under the engine too: the trace runs the model, which fills the cache
            # that the partial steps read.
            with engine.step(step):
                c = count_call(unet, (sample, t), kwargs, static=static)
            counts["full" if step.kind == "full" else f"partial:{step.branch}"] = c.triple()
        num_branches = engine.num_branches
    finally:
        engine.detach()
    for part in preset.parts:
        module = preset.build_part(part.kind)
        if part.kind == "text_encoder":
            ids = torch.zeros((1, *part.input_shape), dtype=torch.long)
            c = count_call(module, (ids,), static={"return_dict": False})
        else:
            z = torch.randn((1, *part.input_shape), generator=torch.Generator().manual_seed(0))
            c = count_call(module, (z,), method="decode", static={"return_dict": False})
        counts[part.kind] = c.triple()
    return MacsTable(name, num_branches, preset.guidance, counts)


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
