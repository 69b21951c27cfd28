"""Histograms kept as plain bucket counts and exported the way prometheus_client does."""

from __future__ import annotations

import math


def cumulative_buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Prometheus histogram buckets (le, cumulative count), +Inf last, from the count of
    each bucket (`counts[i]`: observations in (bounds[i-1], bounds[i]]; the last: above
    every bound)."""
    out, total = [], 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        total += count
        out.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
    return out
