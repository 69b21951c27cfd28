"""The series of each served model, and of each of its layers.

Per model (label ``model``): samples learned/inferred/skipped/rejected, the step, the
micro-batch size and compute time histograms and the queue depth, fed by `ModelMetrics`;
per layer (labels ``model``, ``layer``): weight norms and quality measures, read from each
model's stats source when Prometheus scrapes (`ModelMetrics.set_stats_source`).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.model.quality import LayerStatsValues
from service.server.observability.histograms import cumulative_buckets

_LOG = logging.getLogger(__name__)

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_COMPUTE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)
# LayerStatsValues field -> (metric name, help)
_LAYER_GAUGES = {
    "kernel_norm": (
        "hebbian_layer_weight_norm",
        "Frobenius norm of the layer's feed-forward kernel.",
    ),
    "lateral_norm": (
        "hebbian_layer_lateral_norm",
        "Frobenius norm of the layer's lateral weights.",
    ),
    "orthonormality_error": (
        "hebbian_layer_orthonormality_error",
        "max |W W^T - I| over the units' weight vectors (0 = orthonormal basis).",
    ),
    "weight_drift_per_second": (
        "hebbian_layer_weight_drift_per_second",
        "Relative kernel change per second over about the last minute, "
        "||W_now - W_then|| / ||W_now|| / (now - then); 0 while nothing is learned.",
    ),
    "reconstruction_error": (
        "hebbian_layer_reconstruction_error",
        "Running share of the layer input not explained by its subspace, "
        "||x - W^T W x||^2 / ||x||^2.",
    ),
    "explained_variance": (
        "hebbian_layer_explained_variance",
        "1 - hebbian_layer_reconstruction_error.",
    ),
}
assert set(_LAYER_GAUGES) == {f.name for f in fields(LayerStatsValues)}

StatsSource = Callable[[], list[LayerStatsValues]]


class ModelMetrics:
    """The series of one model. Thread-safe; every call after `close` does nothing."""

    def __init__(self, name: str, families: ModelFamilies, layer_stats: LayerStatsCollector):
        self.name = name
        self._families = families
        self._layer_stats = layer_stats
        self._closed = False
        self._lock = threading.Lock()
        self._tally = families.batches.tally(name)
        self._step = families.step.labels(name)
        self._queue = families.queue.labels(name)
        self._skipped_ratio = families.skipped_ratio.labels(name)

    def observe_batch(
        self, size: int, learned: int, inferred: int, skipped: int, compute_seconds: float
    ) -> None:
        """Record one micro-batch: its size, what it did with the samples, its compute time.

        `learned` counts samples that updated the weights, `inferred` samples served
        without learning, `skipped` learning samples refused because their update would
        have made the weights non-finite.
        """
        if not self._closed:
            self._tally.add(size, learned, inferred, skipped, compute_seconds)

    def read_queue_depth(self, fn: Callable[[], int]) -> None:
        """Samples waiting in the model's queue: `fn()`, read on every scrape (nothing to
        do per batch)."""
        if not self._closed:
            self._queue.set_function(fn)

    def read_step(self, fn: Callable[[], int]) -> None:
        """The model's step (samples learned since initialisation): `fn()`, read on every
        scrape."""
        if not self._closed:
            self._step.set_function(fn)

    def set_skipped_fraction(self, fraction: float) -> None:
        """The share of the model's recent learning samples refused as non-finite."""
        if not self._closed:
            self._skipped_ratio.set(fraction)

    def reject(self, reason: str, samples: int) -> None:
        """Count a rejected request and its samples, e.g. reason "wrong_width", "non_finite"."""
        with self._lock:
            if self._closed:
                return
            self._families.rejected_requests.labels(self.name, reason).inc()
            self._families.rejected_samples.labels(self.name, reason).inc(samples)

    def set_stats_source(self, fn: StatsSource) -> None:
        """Read `fn()` (one `LayerStatsValues` per layer) on every scrape."""
        with self._lock:
            if not self._closed:
                self._layer_stats.set_source(self.name, fn)

    def close(self) -> None:
        """Remove every series of this model from the registry."""
        with self._lock:
            self._closed = True
            self._layer_stats.remove_source(self.name)
            self._families.remove(self.name)


class ModelFamilies:
    """The labelled per-model metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry):
        model = ("model",)
        self.batches = BatchCollector()
        registry.register(self.batches)
        self.rejected_samples = Counter(
            "hebbian_samples_rejected", "Samples in rejected requests, by reason.",
            (*model, "reason"), registry=registry,
        )
        self.rejected_requests = Counter(
            "hebbian_requests_rejected", "Rejected requests (or stream messages), by reason.",
            (*model, "reason"), registry=registry,
        )
        self.step = Gauge(
            "hebbian_model_step", "Samples learned by the model since initialisation.",
            model, registry=registry,
        )
        self.queue = Gauge(
            "hebbian_queue_depth_samples", "Samples queued behind the model's current holder.",
            model, registry=registry,
        )
        self.skipped_ratio = Gauge(
            "hebbian_recent_skipped_ratio",
            "Share of the model's recent learning samples (the last 1000 at most) refused "
            "because their update would make a weight non-finite; above 0.5 the model "
            "refuses most updates.",
            model, registry=registry,
        )

    def remove(self, name: str) -> None:
        """Remove every series of model `name`."""
        self.batches.remove(name)
        for family in (self.step, self.queue, self.skipped_ratio):
            family.remove(name)
        for family in (self.rejected_samples, self.rejected_requests):
            family.remove_by_labels({"model": name})


class BatchTally:
    """One model's micro-batch counts: plain numbers, added to by the model's holder once
    per batch (one lock, instead of a prometheus_client lock per series), read at scrape."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.learned = self.inferred = self.skipped = 0
        self.size_buckets = [0] * (len(_BATCH_BUCKETS) + 1)  # the last one: +Inf
        self.size_sum = 0
        self.compute_buckets = [0] * (len(_COMPUTE_BUCKETS) + 1)
        self.compute_sum = 0.0

    def add(self, size: int, learned: int, inferred: int, skipped: int,
            compute_seconds: float) -> None:
        """Count one micro-batch."""
        with self.lock:
            self.learned += learned
            self.inferred += inferred
            self.skipped += skipped
            self.size_buckets[bisect.bisect_left(_BATCH_BUCKETS, size)] += 1
            self.size_sum += size
            self.compute_buckets[bisect.bisect_left(_COMPUTE_BUCKETS, compute_seconds)] += 1
            self.compute_sum += compute_seconds


class BatchCollector(Collector):
    """The per-model series fed once per micro-batch: samples learned, inferred and skipped
    (counters) and the batch size and compute time (histograms), from each `BatchTally`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[str, BatchTally] = {}

    def tally(self, model: str) -> BatchTally:
        """The tally of `model` (created on first use)."""
        with self._lock:
            return self._tallies.setdefault(model, BatchTally())

    def remove(self, model: str) -> None:
        """Drop every series of `model`."""
        with self._lock:
            self._tallies.pop(model, None)

    @staticmethod
    def _families() -> tuple[Metric, ...]:
        model = ("model",)
        return (
            CounterMetricFamily("hebbian_samples_learned",
                                "Samples applied with learning (weights updated).",
                                labels=model),
            CounterMetricFamily("hebbian_samples_inferred",
                                "Samples served without learning (inference only).",
                                labels=model),
            CounterMetricFamily("hebbian_samples_skipped",
                                "Learning samples not applied because the update would make "
                                "a weight non-finite.", labels=model),
            HistogramMetricFamily("hebbian_microbatch_samples",
                                  "Samples per micro-batch applied by the model's holder.",
                                  labels=model),
            HistogramMetricFamily("hebbian_microbatch_compute_seconds",
                                  "Engine time per micro-batch.", labels=model),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        learned, inferred, skipped, sizes, compute = self._families()
        with self._lock:
            tallies = sorted(self._tallies.items())
        for model, tally in tallies:
            with tally.lock:
                counts = (tally.learned, tally.inferred, tally.skipped)
                size_buckets, size_sum = list(tally.size_buckets), tally.size_sum
                compute_buckets = list(tally.compute_buckets)
                compute_sum = tally.compute_sum
            for family, value in zip((learned, inferred, skipped), counts, strict=True):
                family.add_metric((model,), value)
            sizes.add_metric((model,), cumulative_buckets(_BATCH_BUCKETS, size_buckets), size_sum)
            compute.add_metric((model,), cumulative_buckets(_COMPUTE_BUCKETS, compute_buckets),
                               compute_sum)
        yield from (learned, inferred, skipped, sizes, compute)


class LayerStatsCollector(Collector):
    """Per-layer gauges read from each model's stats source at scrape time.

    Unknown (NaN) values are left out rather than exported as NaN; a source that
    fails is logged and skipped, so one model never breaks the scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, StatsSource] = {}

    def set_source(self, model: str, fn: StatsSource) -> None:
        with self._lock:
            self._sources[model] = fn

    def remove_source(self, model: str) -> None:
        with self._lock:
            self._sources.pop(model, None)

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            field: GaugeMetricFamily(name, doc, labels=("model", "layer"))
            for field, (name, doc) in _LAYER_GAUGES.items()
        }

    def describe(self) -> Iterable[Metric]:
        return self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        with self._lock:
            sources = sorted(self._sources.items())
        for model, fn in sources:
            try:
                stats = fn()
            except Exception:
                _LOG.warning("layer statistics of model %r unavailable", model, exc_info=True)
                continue
            for index, values in enumerate(stats):
                for field, family in families.items():
                    value = float(getattr(values, field))
                    if not math.isnan(value):
                        family.add_metric((model, str(index)), value)
        yield from families.values()
