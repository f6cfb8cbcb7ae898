"""The naive gateway of ``bench_naive`` with the garbage-collector tuning ``cmn serve`` applies.

    python -m tests.performance.bench_naive_tuned kafka --bootstrap B --topic T --upstream URL

``cmn serve`` freezes the objects alive after start-up and raises the collector's thresholds
(gateway.gc_governor.tune_collector); the naive gateway keeps CPython's defaults. This variant gives
it the same tuning, so a CPU ratio can be reported both ways (issue 14, "Keep the baselines honest").
The naive program itself is unchanged.
"""

from __future__ import annotations

import gc

from gateway.gc_governor import tune_collector
from tests.performance import bench_naive


def main() -> None:
    # Tuned before the broker clients start, as early as ``cmn serve`` tunes relative to its own
    # start-up; the objects the clients create later stay collectable, as in CMN.
    tune_collector(gc)
    bench_naive.main()


if __name__ == "__main__":
    main()
