"""`hebbian stream`: stream samples over one StreamProcess call, with progress and a summary.

With `--synthetic` the samples come from `SyntheticSensor`, whose principal components
are known, and the summary says how close the model got to them. The weights are not
read from the server: the model is probed with the identity matrix as inference-only
samples (`learn=False`, the state is untouched), which returns exactly the weights of a
linear stack (row i of the probe's answer = the response to channel i alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from service.cli_csv import CsvFormat, csv_batches, csv_format, csv_rows
from service.cli_io import InputError, Progress, format_rows, open_input, source_name
from service.client import HebbianClient, config_from_proto
from service.synthetic import SyntheticSensor, alignment

DEFAULT_SYNTHETIC_COUNT = 20_000
_PROBE_CHUNK = 256
# Messages sent but not yet answered: keeps the pipeline full while the answers (and
# the convergence reports) stay close to what the server has applied.
_WINDOW = 16


def run_stream(client: HebbianClient, args: argparse.Namespace) -> int:
    """Runs `hebbian stream` with parsed `args`; returns the exit code."""
    if args.json and args.output == "-":
        raise InputError("--json prints the summary on stdout: write --output to a file")
    if not args.synthetic and args.file in (None, "-") and sys.stdin.isatty():
        raise InputError("no samples: give --file or --synthetic, or pipe CSV rows into stdin")
    fmt = csv_format(args)
    # a bad file is refused before anything is sent (and before the server is asked)
    total = None if args.synthetic else _check_file(args.file, fmt)
    model = client.get_model(args.model)
    name, start_step = model.name, int(model.step)
    sensor = None
    source: IO[str] | None = None
    if args.synthetic:
        sensor = SyntheticSensor(int(model.config.input_dim), seed=args.seed, noise=args.noise)
        count = args.count or DEFAULT_SYNTHETIC_COUNT
        batches = sensor.batches(args.batch, count)
    else:
        source = open_input(args.file)
        count = min(args.count, total) if args.count and total else args.count or total
        batches = csv_batches(source, args.batch, args.count, fmt, source_name(args.file))
    output = _open_output(args.output)
    report = sys.stderr if output is sys.stdout or args.json else sys.stdout
    probe = _linear_probe(client, model, name) if sensor is not None else None
    reports: list[dict] = []
    if probe and args.report_every and not args.json:
        print(f"{'step':>9}  |cos| of row i with component i   subspace", file=report)
    done, step, next_report = 0, start_step, args.report_every
    started = time.monotonic()
    progress = Progress(count, description=f"model {name}", enabled=not args.quiet)
    try:
        with progress, _after(lambda: done):
            for result in client.stream_full(
                batches, model=name, learn=args.learn, window=_WINDOW
            ):
                done += len(np.atleast_2d(result.activations))
                step = result.step
                if output is not None:
                    print(format_rows(result.activations), file=output)
                progress.update(done, note=f"step {step}")
                if probe and next_report and done >= next_report:
                    weights, probe_step = probe()
                    found = alignment(weights, sensor.components)
                    reports.append({"step": probe_step, "cosines": list(map(float, found.cosines)),
                                    "subspace": float(found.subspace)})
                    if not args.json:
                        progress.write(_report_line(probe_step, found), report)
                    next_report += args.report_every
    finally:
        elapsed = time.monotonic() - started
        if source is not None and source is not sys.stdin:
            source.close()
        if output is not None and output is not sys.stdout:
            output.close()
    summary = {
        "model": name, "samples": done, "seconds": round(elapsed, 6),
        "samples_per_second": done / max(elapsed, 1e-9), "start_step": start_step, "step": step,
    }
    if reports:
        summary["reports"] = reports
    if not args.json:
        print(
            f"streamed {done} samples in {elapsed:.2f} s ({summary['samples_per_second']:,.0f} "
            f"samples/s) to model {name}; step {start_step} -> {step}",
            file=report,
        )
    if sensor is not None:
        summary["synthetic"] = _synthetic_summary(
            client, name, sensor, probe, None if args.json else report
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _check_file(path: str | None, fmt: CsvFormat) -> int | None:
    """Reads a regular file's samples once, so that a bad line stops the command before
    anything is sent; returns their count (for the progress display's ETA). None for
    stdin or a pipe, which are read only once, as they stream."""
    if path in (None, "-"):
        return None
    with open_input(path) as handle:  # a missing file: InputError
        if not os.path.isfile(path):
            return None
        return sum(1 for _ in csv_rows(handle, fmt, source_name(path)))


@contextlib.contextmanager
def _after(done: Callable[[], int]) -> Iterator[None]:
    """Adds to an input error raised mid-stream how many samples were sent before it."""
    try:
        yield
    except InputError as error:
        sent = done()
        raise InputError(f"{error} (the {sent} samples before it were sent and answered)") from None


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
    client: HebbianClient, name: str, sensor: SyntheticSensor, probe: Any, out: IO[str] | None
) -> dict:
    """The model against the sensor's known components, and the server's own statistics;
    printed to `out` (None: not printed), returned as JSON data."""

    def say(line: str) -> None:
        if out is not None:
            print(line, file=out)

    summary: dict[str, Any] = {
        "channels": sensor.channels, "seed": sensor.seed,
        "eigenvalues": [float(v) for v in sensor.eigenvalues],
    }
    variances = ", ".join(f"{v:.3g}" for v in sensor.eigenvalues[:5])
    say(f"synthetic sensor: {sensor.channels} channels, seed {sensor.seed}, "
        f"covariance eigenvalues {variances}, ...")
    model = client.get_model(name)
    if probe is None:
        say("the model is not linear: no comparison with the components")
    else:
        result = alignment(probe()[0], sensor.components)
        rules = ",".join(layer.rule or "oja" for layer in model.config.layers)
        say(f"weights (identity probe, inference only) vs the known components, rule {rules}:")
        say("  unit   |cos(row, component)|   row norm")
        for unit, (cosine, norm) in enumerate(zip(result.cosines, result.norms, strict=True)):
            say(f"  {unit:>4}   {cosine:>21.4f}   {norm:>8.4f}")
        units = len(result.cosines)
        share = sensor.eigenvalues[:units].sum() / sensor.eigenvalues.sum()
        say(f"  top-{units} principal subspace captured: {result.subspace:.4f} "
            f"(those components hold {share:.1%} of the variance)")
        summary.update(
            cosines=[float(c) for c in result.cosines], norms=[float(n) for n in result.norms],
            subspace=float(result.subspace), variance_share=float(share),
        )
    layers = []
    for index, stats in enumerate(model.layer_stats):
        figures = [
            ("explained variance", stats.explained_variance),
            ("orthonormality error", stats.orthonormality_error),
        ]
        finite = [(label, float(v)) for label, v in figures if math.isfinite(v)]
        layers.append({label.replace(" ", "_"): v for label, v in finite})
        shown = ", ".join(f"{label} {v:.4f}" for label, v in finite)
        if shown:
            say(f"server's running estimates (GetModel), layer {index}: {shown}")
    summary["server_estimates"] = layers
    return summary
