"""Plans evaluated on a model bundle: the rFID harness that samples with :mod:`bench.generate` and scores with
:mod:`bench.quality` (the one module that joins the two siblings; both point down to ``bench.models``)."""
from __future__ import annotations

from bench.generate import generate_images
from bench.quality.rfid import RelativeFID, TeacherSpec
from flexiffusion.errors import UserError


def relative_fid(bundle, seeds, grid_length: int, *, scheduler: str = "ddim", guidance_scale=None, prompts=None,
                 labels=None, plan=None, gen_batch_size: int = 64, progress: bool = False, **kwargs) -> RelativeFID:
    """rFID of plans on ``bundle`` against its teacher on a ``grid_length``-step grid (``plan``: a custom teacher
    plan, default all full steps), sampled by :func:`bench.generate.generate_images` with the teacher's seeds.
    ``kwargs`` go to :class:`RelativeFID` (extractor, its weights_path, cache_dir, ...)."""
    seeds = tuple(int(s) for s in seeds)
    spec = TeacherSpec.of_bundle(bundle, seeds, grid_length, scheduler=scheduler, guidance_scale=guidance_scale,
                                 prompts=prompts, labels=labels, plan=plan)

    def generate(p):
        if len(p) != grid_length:
            raise UserError(f"rFID: the plan has {len(p)} steps, the teacher's base grid {grid_length}")
        return generate_images(bundle, p, seeds, scheduler=scheduler, guidance_scale=guidance_scale,
                               prompts=prompts, labels=labels, batch_size=gen_batch_size, progress=progress)

    return RelativeFID(generate, spec, plan=plan, **kwargs)
