"""A small AutoDiffusion search on the embedded model through bench.evaluation and the results store (rFID vs a
10-step teacher on 8 images, K = 3), for kill -9 / resume and executor tests.

    python tests/autodiffusion_job.py STORE OUT [--kill-put K [--after]] [--executor local|ray]

``--kill-put K``: SIGKILL this process at the K-th store write (before it: the evaluation is lost; ``--after``: once
it is committed).  OUT: the result as JSON (best, fitness, history, evaluations, fresh evaluations).
"""
import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.autodiffusion.method import AutoDiffusionConfig  # noqa: E402
from baselines.autodiffusion.search import EvolutionConfig  # noqa: E402
from bench.search.autodiffusion import search  # noqa: E402

CONFIG = AutoDiffusionConfig(k=3, budget_layers=3 * 23 - 3, max_drop_fraction=0.1, fitness="rfid",
                             teacher_steps=10, search_images=8,
                             evolution=EvolutionConfig(population=6, top_k=2, mutation=3, crossover=1, epochs=3,
                                                       stage1_epochs=1, ramp_epochs=1, seed=5))


def result_dict(result) -> dict:
    return {"best": result.best.key(), "fitness": result.fitness, "history": result.history,
            "evaluations": result.evaluations}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--kill-put", type=int, default=0)
    ap.add_argument("--after", action="store_true")
    ap.add_argument("--executor", default="local")
    a = ap.parse_args()
    import torch

    from bench.models import load_model
    from bench.store import ResultStore

    torch.set_num_threads(1)
    if a.kill_put:
        real_put, count = ResultStore.put, [0]

        def put(self, key, rows):
            count[0] += 1
            if count[0] == a.kill_put and not a.after:
                os.kill(os.getpid(), signal.SIGKILL)
            out = real_put(self, key, rows)
            if count[0] == a.kill_put:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        ResultStore.put = put
    bundle = load_model("embedded")
    kw = {"actors": 2} if a.executor == "ray" else {}
    with ResultStore(a.store) as store:
        result = search(bundle, CONFIG, store, batch_size=4, progress=False, executor=a.executor,
                        cache_dir=Path(a.store).parent / "cache", **kw)
    Path(a.out).write_text(json.dumps(result_dict(result), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
