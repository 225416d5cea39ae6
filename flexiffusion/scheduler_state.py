"""A diffusers scheduler's state as plain data (tensors, numbers, lists; no pickled objects), and its restoration
into a scheduler of the same kind, config and timestep grid.

A scheduler's state is its instance attributes: the tables set by ``__init__`` / ``set_timesteps`` (betas,
alphas_cumprod, sigmas, timesteps) and what ``step`` changes (DDIM: nothing; PNDM/PLMS: ``ets``, ``counter``,
``cur_sample``, ``cur_model_output``; DPM-Solver multistep: ``model_outputs``, ``lower_order_nums``,
``_step_index``; singlestep also ``sample`` and ``order_list``).  All of them are captured generically, so a
scheduler that keeps another field is covered too; a field of a type that is not plain data is refused.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import UserError

_NDARRAY = "__ndarray__"


def _to_data(value, where: str):
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.array(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_data(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _to_data(v, where) for k, v in value.items()}
    raise UserError(f"scheduler field {where} holds a {type(value).__name__}: cannot store this scheduler's state "
                    "as data (unsupported scheduler)")


def _from_data(value, like, device):
    if isinstance(value, dict) and set(value) == {_NDARRAY}:
        return value[_NDARRAY].numpy().copy()
    if isinstance(value, torch.Tensor):
        target = like.device if isinstance(like, torch.Tensor) else device
        return value if target is None or value.device == torch.device(target) else value.to(target)
    if isinstance(value, (list, tuple)):
        return type(value)(_from_data(v, None, device) for v in value)
    if isinstance(value, dict):
        return {k: _from_data(v, None, device) for k, v in value.items()}
    return value


def _config(scheduler) -> dict:
    return {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


def scheduler_state(scheduler) -> dict:
    """``{"class", "config", "fields"}``: everything the scheduler carries, as plain data."""
    fields = {k: _to_data(v, f"{type(scheduler).__name__}.{k}") for k, v in vars(scheduler).items()
              if k != "_internal_dict"}
    return {"class": type(scheduler).__name__, "config": _to_data(_config(scheduler), "config"), "fields": fields}


def check_same_scheduler(state: dict, scheduler) -> None:
    """Raise a one-line UserError unless ``scheduler`` has the kind, config and grid of the stored ``state``."""
    kind = type(scheduler).__name__
    if state["class"] != kind:
        raise UserError(f"cannot resume: the state was made with {state['class']}, not {kind}: resume with the "
                        "scheduler that produced it")
    config = _to_data(_config(scheduler), "config")
    diff = sorted(k for k in set(config) | set(state["config"]) if config.get(k) != state["config"].get(k))
    if diff:
        k = diff[0]
        raise UserError(f"cannot resume: the state was made with another scheduler config ({k} = "
                        f"{state['config'].get(k)!r}, got {config.get(k)!r}): resume with the same config")
    stored = state["fields"].get("timesteps")
    grid = scheduler.timesteps
    if stored is None or grid is None or len(stored) != len(grid) or not torch.equal(stored.cpu(), grid.cpu()):
        raise UserError(f"cannot resume: the state was made on another timestep grid "
                        f"({0 if stored is None else len(stored)} steps, got {0 if grid is None else len(grid)} "
                        "steps): resume with the same number of inference steps")


def restore_scheduler(scheduler, state: dict, device=None):
    """Check ``scheduler`` against ``state`` and load the stored fields into it (tensors onto the device of the
    scheduler's own field, or ``device``); returns ``scheduler``."""
    check_same_scheduler(state, scheduler)
    for k, v in state["fields"].items():
        setattr(scheduler, k, _from_data(v, getattr(scheduler, k, None), device))
    return scheduler
