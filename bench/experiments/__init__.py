"""Experiments as data: one TOML file per paper table and figure (``specs/``), parsed strictly into
:class:`~bench.experiments.spec.ExperimentSpec`, run cell by cell into the results store
(:mod:`bench.experiments.runner`) and rendered from the store only (``reports``)."""
