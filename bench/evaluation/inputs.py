"""Every input of a command, resolved and validated before a single U-Net call.

:func:`resolve_inputs` takes a model name of the vocabulary (:mod:`bench.models.catalog`) and what the user gave
(weights, device, real data, feature extractor and its weights, CLIP, prompts) and checks, cheapest first: the name,
the device, the weights folder's files and layout (configs only, nothing loaded), then the quality reference against
the image shape that folder makes (real images of that shape or statistics of the extractor's dimension, extractor
and CLIP weights present, prompts readable).  A missing or mismatched input is one :class:`UserError` line naming
the file and the fix; the commands print it and exit 2.  Only then :meth:`ModelInputs.load` loads the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from flexiffusion.errors import UserError


@dataclass(frozen=True)
class ModelInputs:
    """A model and its quality reference, checked; ``load()`` is the first thing that reads weights."""

    entry: object                 # bench.models.catalog.ModelEntry
    weights: str | None           # the folder / hub id given (None: the model's default)
    device: object                # torch.device
    image_shape: tuple[int, int, int]
    folder: object = None         # bench.models.loading.FolderInfo of a checkpoint folder (None: shipped model)
    reference: object = None      # bench.quality.reference.CheckedReference (None: no quality measured)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def real(self) -> str | None:
        return None if self.reference is None else self.reference.real

    @property
    def extractor(self) -> str:
        return self.entry.extractor if self.reference is None else self.reference.extractor

    @property
    def extractor_weights(self) -> str | None:
        return None if self.reference is None else self.reference.extractor_weights

    def load(self, dtype=None):
        """The model (:class:`~bench.models.ModelBundle`) on the checked device."""
        import torch

        from bench.models import load_model

        # by name: no --weights means the model's own default (e.g. google/ddpm-bedroom-256, as checked), not the
        # loader's
        return load_model(self.entry.name, self.weights, device=self.device, dtype=dtype or torch.float32)


def _weights_of(entry, weights: str | None):
    """(FolderInfo or None, image shape) of the weights, from configs only."""
    if entry.shipped:
        if weights is not None:
            raise UserError(f"--weights {weights}: model {entry.name!r} ships with the suite and takes no weights "
                            "folder: drop --weights")
        return None, tuple(entry.resolution)
    from bench.models.loading import inspect_folder

    target = weights or entry.default_weights
    if target is None:
        raise UserError(f"model {entry.name!r} needs its weights: pass --weights DIR ({entry.weights_hint}); nothing "
                        "is downloaded here")
    info = inspect_folder(entry.loader, target)
    return info, tuple(info.image_shape)


def resolve_inputs(model: str, weights: str | None = None, *, device: str = "cpu", quality: bool = True,
                   real: str | None = None, extractor: str | None = None, extractor_weights: str | None = None,
                   clip_model: str | None = None, clip_pretrained: str | None = None,
                   prompts_file: str | None = None, needs_real: bool = True, clip: bool = True) -> ModelInputs:
    """Resolve and check every input of a command on ``model`` (see the module docstring).  ``quality=False``:
    the command measures no quality (sample, latency), so only the model, its weights and the device are checked;
    ``needs_real=False``: quality against the teacher only (rFID search fitness), no real data needed;
    ``clip=False``: no CLIP score (searches, ablations), its weights not asked for."""
    from flexiffusion.devices import resolve_device
    from bench.models.catalog import get_model

    entry = get_model(model)
    dev = resolve_device(device)
    folder, shape = _weights_of(entry, weights)
    notes = []
    if tuple(shape) != tuple(entry.resolution) and not entry.shipped:
        c, h, w = shape
        notes.append(f"note: {weights or entry.default_weights} makes {c}x{h}x{w} images; the paper's "
                     f"{entry.name} makes {'x'.join(map(str, entry.resolution))} (a reduced-size stand-in?)")
    if not quality:
        if prompts_file is not None:
            read_prompts(prompts_file)
        return ModelInputs(entry, weights, dev, shape, folder, None, tuple(notes))
    from bench.quality.reference import QualityReference, check_reference

    if entry.text and prompts_file is None and entry.prompts is None:
        raise UserError(f"model {entry.name!r} is text-to-image and has no default prompts: pass --prompts FILE "
                        "(one prompt per line, e.g. Parti-Prompts or COCO captions)")
    ref = QualityReference(real=real if real is not None else entry.real,
                           extractor=extractor or entry.extractor, extractor_weights=extractor_weights,
                           clip_model=(clip_model or entry.clip_model) if entry.text and clip else None,
                           clip_pretrained=(clip_pretrained or entry.clip_pretrained) if entry.text and clip else None,
                           prompts_file=prompts_file)
    if needs_real and ref.real is None:
        raise UserError(f"model {entry.name!r} needs its real data for FID: pass --real DIR (images of "
                        f"{'x'.join(map(str, shape))}) or --real FILE.npz (torch-fidelity statistics, mu and sigma of "
                        f"{ref.extractor} features)")
    checked = check_reference(ref if needs_real else replace(ref, real=None), shape, text=entry.text,
                              needs_real=needs_real)
    return ModelInputs(entry, weights, dev, shape, folder, checked, tuple(notes))


def read_prompts(path: str) -> list[str]:
    """The prompts of a file, one per line (one line naming the file when it is missing, unreadable or empty)."""
    from bench.quality.reference import read_prompts_file

    return list(read_prompts_file(path))
