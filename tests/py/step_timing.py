"""Timing shared by the PyTorch bench scripts (sae_step_torch.py, topk_sae_torch.py)."""

import json
import resource
import statistics
import time

import torch


def report_step_time(step, steps, **extra):
    """Time `steps` calls of `step` after two warm-up calls and print one JSON line.

    The line holds "seconds" (the median), "rss_mb" (peak resident set size), "threads",
    "blas" ("openblas" when libopenblas is mapped) and the `extra` fields, evaluated after the
    timed calls when given as zero-argument functions.
    """
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    blas = "openblas" if "openblas" in open("/proc/self/maps").read() else "other"
    print(json.dumps({
        "seconds": statistics.median(times),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "blas": blas,
        **{k: v() if callable(v) else v for k, v in extra.items()},
    }))
