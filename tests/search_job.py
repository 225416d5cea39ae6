"""A small search run through the driver and the results store with the toy fitness (tests/search_fitness.py),
for kill -9 / resume tests.  Not rFID.

    python tests/search_job.py STORE OUT LOG [--kill-put K] [--kill-outputs] [--seed S] [--sleep SECONDS]

``--kill-put K``: SIGKILL this process inside the K-th evaluation's store transaction (rows inserted, not yet
committed); ``--kill-outputs``: SIGKILL it after the first Pareto file is written.  Every evaluation computed is
appended to LOG (one digest per line) before it is stored.
"""
import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_fitness import toy_fitness  # noqa: E402

from bench.search import driver  # noqa: E402
from flexiffusion.search.evolution import EvolutionConfig  # noqa: E402
from flexiffusion.search.space import SearchSpace  # noqa: E402

MACS = (0, 9, 23, 41, 80, 100)
SPACE = SearchSpace((6, 7, 8), (1, 2, 3), (1, 2, 3), 4, 32)
CONFIG = dict(iterations=15, parents=6, children=4, population=20, initial=10, max_tries=50)


def make_run(seed: int, log: Path, sleep: float = 0.0) -> driver.SearchRun:
    def rows(proposals, space):
        out = []
        for p in proposals:   # the search's proposals: candidate, compiled plan, digest, avg MACs
            with open(log, "a") as fh:
                fh.write(p.plan.digest() + "\n")
            time.sleep(sleep)
            out.append({"fitness": toy_fitness(p.plan), "mse": toy_fitness(p.plan) / 2})
        return out

    backend = driver.Backend("toy-v1", rows, {"fitness": "toy"}, {"model": "none", "n_images": 0})
    return driver.SearchRun("toy", SPACE, 45.0, EvolutionConfig(seed=seed, **CONFIG), MACS, backend, "toy")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("log")
    ap.add_argument("--kill-put", type=int, default=0)
    ap.add_argument("--kill-outputs", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sleep", type=float, default=0.0)
    a = ap.parse_args()
    if a.kill_put:
        from bench.store import ResultStore

        real_put, count = ResultStore.put, [0]

        def put(self, key, rows):
            count[0] += 1
            if count[0] == a.kill_put:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO results (key, created) VALUES (?, 'x')", (key,))
                os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: inserted, never committed
            return real_put(self, key, rows)
        ResultStore.put = put
    if a.kill_outputs:
        import flexiffusion.io as fio

        real_write = driver.atomic_write_json

        def write(path, obj, **kw):
            real_write(path, obj, **kw)
            os.kill(os.getpid(), signal.SIGKILL)
        driver.atomic_write_json = write
        assert fio
    driver.run_search(make_run(a.seed, Path(a.log), a.sleep), a.store, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
