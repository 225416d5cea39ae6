"""Algorithm 2 of Flexiffusion (segment-wise mutation).

``n_m`` distinct segments of the parent are drawn at random; each in turn gets a random mode ("heavier" or
"lighter") and a random dimension (branch, interval, N-segment), and moves to the next larger / smaller choice of
that dimension (at the end of a choice list it stays: the paper's mutation has no wrap-around).

* branch: deeper (heavier) or shallower (lighter) skip branch of that segment;
* interval: longer (heavier) or shorter (lighter) active part of that segment;
* N-segment: heavier = *split* the segment: copies of it are inserted right after it until N reaches the next larger
  choice of S; lighter = *merge*: the segment absorbs its right neighbours (its left neighbours when it is the last
  segment) until N reaches the next smaller choice; the merged segment keeps the chosen segment's branch and
  interval.  What a split or merge does to the plan depends on the layout: ``tile`` re-tiles the same base grid, so
  every boundary moves a little (segments get shorter on a split, longer on a merge) and the prefix shared with the
  parent ends where the first boundary moves; ``compact`` inserts / removes whole ``max(I)``-step segments, so the
  grid grows or shrinks by ``max(I)`` steps per segment and everything before the chosen segment is unchanged.

The chosen segments are processed from the last to the first, so a split or merge never shifts a segment still to
be mutated.  All randomness comes from the ``numpy.random.Generator`` passed in (seeded searches replay exactly).
"""
from __future__ import annotations

import numpy as np

from .space import Candidate, SearchSpace, Segment

DIMENSIONS = ("branch", "interval", "segments")
DEFAULT_N_M = 3


def _step(choices: tuple[int, ...], value: int, heavier: bool) -> int:
    i = choices.index(value)
    j = min(i + 1, len(choices) - 1) if heavier else max(i - 1, 0)
    return choices[j]


def mutate(parent: Candidate, space: SearchSpace, rng: np.random.Generator, n_m: int = DEFAULT_N_M) -> Candidate:
    """One child of ``parent`` (Algorithm 2); ``n_m`` is capped at the parent's number of segments."""
    segs = list(parent.segments)
    picks = sorted(rng.choice(len(segs), size=min(n_m, len(segs)), replace=False).tolist(), reverse=True)
    for i in picks:
        heavier = bool(rng.integers(2))
        dim = DIMENSIONS[int(rng.integers(len(DIMENSIONS)))]
        i = min(i, len(segs) - 1)  # a merge at the end may have absorbed this index's segment
        s = segs[i]
        if dim == "branch":
            segs[i] = Segment(_step(space.branches, s.branch, heavier), s.interval)
        elif dim == "interval":
            segs[i] = Segment(s.branch, _step(space.intervals, s.interval, heavier))
        else:
            target = _step(space.segments, len(segs), heavier) if len(segs) in space.segments else len(segs)
            while len(segs) < target:      # split: the segment's copies follow it
                segs.insert(i + 1, s)
            while len(segs) > target:      # merge: absorb the right neighbour (left one at the end)
                if i + 1 < len(segs):
                    del segs[i + 1]
                else:
                    del segs[i - 1]
                    i -= 1
    return Candidate(tuple(segs))
