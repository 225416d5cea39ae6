"""Candidate evaluation for the search (issue 9): the setting, the evaluator (rFID / FID / MSE fitness with prefix
reuse), execution options, executors (local, Ray) and the naive-vs-fast benchmark."""
from .harness import relative_fid
from .setting import EvaluationSetting, ExecutionMode

__all__ = ["EvaluationSetting", "ExecutionMode", "relative_fid"]
