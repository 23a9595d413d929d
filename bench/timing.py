"""Timing for the side-by-side benchmarks: contenders take turns, their medians are compared.

Taking turns every repeat means drifting machine load (another process, a warming CPU) hits
every contender alike; the median ignores the odd slow run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fns: list[Callable[[], object]], repeats: int, warmup: int = 0) -> list[float]:
    """Median wall time of each function over ``repeats`` turns, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
