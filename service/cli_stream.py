"""`hebbian stream`: stream samples over one StreamProcess call, with progress and a summary.

With `--synthetic` the samples come from `SyntheticSensor`, whose principal components
are known, and the summary says how close the model got to them. The weights are not
read from the server: the model is probed with the identity matrix as inference-only
samples (`learn=False`, the state is untouched), which returns exactly the weights of a
linear stack (row i of the probe's answer = the response to channel i alone).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import IO, Any

import numpy as np

from service.cli_io import InputError, Progress, csv_batches, format_rows, open_input
from service.client import HebbianClient, config_from_proto
from service.synthetic import SyntheticSensor, alignment

DEFAULT_SYNTHETIC_COUNT = 20_000
_PROBE_CHUNK = 256
# Messages sent but not yet answered: keeps the pipeline full while the answers (and
# the convergence reports) stay close to what the server has applied.
_WINDOW = 16


def run_stream(client: HebbianClient, args: argparse.Namespace) -> int:
    """Runs `hebbian stream` with parsed `args`; returns the exit code."""
    model = client.get_model(args.model)
    name, start_step = model.name, int(model.step)
    sensor = None
    source: IO[str] | None = None
    if args.synthetic:
        sensor = SyntheticSensor(int(model.config.input_dim), seed=args.seed, noise=args.noise)
        count = args.count or DEFAULT_SYNTHETIC_COUNT
        batches = sensor.batches(args.batch, count)
    else:
        if args.file in (None, "-") and sys.stdin.isatty():
            raise InputError("no samples: give --file or --synthetic, or pipe CSV rows into stdin")
        source = open_input(args.file)
        count = args.count
        batches = csv_batches(source, args.batch, count)
    output = _open_output(args.output)
    report = sys.stderr if output is sys.stdout else sys.stdout
    probe = _linear_probe(client, model, name) if sensor is not None else None
    progress = Progress(count, enabled=not args.quiet and sys.stderr.isatty())
    if probe and args.report_every:
        header = f"{'step':>9}  |cos| of row i with component i   subspace"
        print(header, file=report)
    done, step, next_report = 0, start_step, args.report_every
    started = time.monotonic()
    try:
        for result in client.stream_full(batches, model=name, learn=args.learn, window=_WINDOW):
            done += len(np.atleast_2d(result.activations))
            step = result.step
            if output is not None:
                print(format_rows(result.activations), file=output)
            progress.update(done, step)
            if probe and next_report and done >= next_report:
                progress.clear()
                weights, probe_step = probe()
                print(_report_line(probe_step, alignment(weights, sensor.components)), file=report)
                next_report += args.report_every
    finally:
        elapsed = time.monotonic() - started
        progress.clear()
        if source is not None and source is not sys.stdin:
            source.close()
        if output is not None and output is not sys.stdout:
            output.close()
    print(
        f"streamed {done} samples in {elapsed:.2f} s ({done / max(elapsed, 1e-9):,.0f} samples/s)"
        f" to model {name}; step {start_step} -> {step}",
        file=report,
    )
    if sensor is not None:
        _synthetic_summary(client, name, sensor, probe, report)
    return 0


def _open_output(path: str | None) -> IO[str] | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")  # closed by run_stream
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror}") from None


def _linear_probe(client: HebbianClient, model: Any, name: str) -> Any:
    """A function returning (weights (units, input), step) when the stack is linear.

    None when an activation is not linear: the probe would not be the weights then.
    `step` is the model's step when the probe ran.
    """
    config = config_from_proto(model.config)
    if any(layer.get("activation", "linear") != "linear" for layer in config["layers"]):
        return None
    identity = np.eye(config["input_dim"], dtype=np.float32)

    def probe() -> tuple[np.ndarray, int]:
        results = [
            client.process_full(identity[i : i + _PROBE_CHUNK], learn=False, model=name)
            for i in range(0, len(identity), _PROBE_CHUNK)
        ]
        return np.concatenate([r.activations for r in results]).T, results[0].step

    return probe


def _report_line(step: int, result: Any) -> str:
    cosines = " ".join(f"{c:.3f}" for c in result.cosines)
    return f"{step:>9}  {cosines:<32} {result.subspace:.3f}"


def _synthetic_summary(
    client: HebbianClient, name: str, sensor: SyntheticSensor, probe: Any, out: IO[str]
) -> None:
    """The model against the sensor's known components, and the server's own statistics."""
    variances = ", ".join(f"{v:.3g}" for v in sensor.eigenvalues[:5])
    print(
        f"synthetic sensor: {sensor.channels} channels, seed {sensor.seed}, "
        f"covariance eigenvalues {variances}, ...",
        file=out,
    )
    model = client.get_model(name)
    if probe is None:
        print("the model is not linear: no comparison with the components", file=out)
    else:
        result = alignment(probe()[0], sensor.components)
        rules = ",".join(layer.rule or "oja" for layer in model.config.layers)
        print(
            f"weights (identity probe, inference only) vs the known components, rule {rules}:",
            file=out,
        )
        print("  unit   |cos(row, component)|   row norm", file=out)
        for unit, (cosine, norm) in enumerate(zip(result.cosines, result.norms, strict=True)):
            print(f"  {unit:>4}   {cosine:>21.4f}   {norm:>8.4f}", file=out)
        units = len(result.cosines)
        share = sensor.eigenvalues[:units].sum() / sensor.eigenvalues.sum()
        print(
            f"  top-{units} principal subspace captured: {result.subspace:.4f} "
            f"(those components hold {share:.1%} of the variance)",
            file=out,
        )
    for index, stats in enumerate(model.layer_stats):
        figures = [
            ("explained variance", stats.explained_variance),
            ("orthonormality error", stats.orthonormality_error),
        ]
        shown = ", ".join(f"{label} {v:.4f}" for label, v in figures if math.isfinite(v))
        if shown:
            print(f"server's running estimates (GetModel), layer {index}: {shown}", file=out)
