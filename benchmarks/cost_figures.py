"""Print the cost issue's two wall-clock figures (engine overhead; DeepCache-like plan, wall vs MAC speedup).

    python benchmarks/cost_figures.py [--batch 16] [--threads 2] [--steps 20] [--interval 5] [--branches 1,2]

Same as ``flexbench cost-figures``; the numbers recorded in docs/costs.md come from it.
"""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main(["cost-figures", *sys.argv[1:]]))
