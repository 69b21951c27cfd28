"""The service's own cost per stream message, without gRPC: `hebbian bench pipeline`.

Feeds `HebbianServicer.StreamProcess` from an in-process iterator of serialised
messages (parsed like gRPC would), with the real registry, model core (the stream's
pipeline, combining) and engine, a window of unanswered messages like a streaming
client's, and serialises every answer. What it measures is everything the service adds
on top of gRPC: message parsing and serialising, validation and decoding, the stream
pipeline (inline: nothing is fsynced), the combiner, the write-ahead log,
micro-batches and engine calls, the answers. Compare
its CPU per message with the echo server's in `hebbian bench`: the service can only reach
a ratio r of the echo's messages/s if its own cost fits in (1/r - 1) x the echo's.

    hebbian bench pipeline [--messages 20000] [--samples-per-message 1] [--repeats 3] [--json]

The model and the messages are those of `hebbian bench` (256 -> 64 `oja`, raw float32
samples), and so is the server's durability: a temporary data directory, fsync `no`.
Each run reports messages/s and the process's CPU microseconds per message; the median
over `--repeats` runs is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from service.bench import load
from service.bench.service import INPUT_DIM, RULE, UNITS  # the same model as `hebbian bench`


class _Context:
    """The little of `grpc.ServicerContext` that `StreamProcess` uses on a healthy stream."""

    def add_callback(self, callback) -> bool:
        return True

    def time_remaining(self) -> None:
        return None

    def abort(self, code, details: str):
        raise RuntimeError(f"{code}: {details}")


def run_once(servicer, messages: int, samples_per_message: int, window: int) -> dict:
    """One stream of `messages` through `servicer`; messages/s and CPU us per message."""
    from service.api import hebbian_pb2 as pb

    wire = load.payloads(INPUT_DIM, samples_per_message)
    room = threading.Semaphore(window)

    def requests() -> Iterator:
        for index in range(messages):
            room.acquire()  # like a client: at most `window` messages unanswered
            yield pb.StreamProcessRequest.FromString(wire[index % len(wire)])

    answered = 0
    started, cpu = time.perf_counter(), time.process_time()
    for response in servicer.StreamProcess(requests(), _Context()):
        response.SerializeToString()
        room.release()
        answered += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if answered != messages:
        raise RuntimeError(f"{answered} of {messages} messages answered")
    return {"messages_per_s": messages / seconds, "cpu_us_per_msg": cpu / messages * 1e6}


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline benchmark; print the medians (or JSON)."""
    parser = argparse.ArgumentParser(prog="hebbian bench pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="messages per run")
    parser.add_argument("--samples-per-message", type=int, default=1)
    parser.add_argument("--window", type=int, default=64, help="most unanswered messages")
    parser.add_argument("--repeats", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args = parser.parse_args(argv)
    if min(args.messages, args.samples_per_message, args.window, args.repeats) < 1:
        parser.error("--messages, --samples-per-message, --window and --repeats must be >= 1")

    from service.server.config import ServerConfig
    from service.server.rpc.servicer import HebbianServicer
    from service.server.runtime import HebbianServer

    model = {"input_dim": INPUT_DIM, "layers": [{"units": UNITS, "rule": RULE, "seed": 0}]}
    data = tempfile.TemporaryDirectory(prefix="hebbian-bench-pipeline-")
    config = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, data_dir=Path(data.name),
                          fsync="no", models={"default": model})
    server = HebbianServer(config).start()
    try:
        if not server.wait_ready(300):
            print("hebbian bench pipeline: the model never got ready", file=sys.stderr)
            return 1
        limits = config.limits
        servicer = HebbianServicer(
            server.registry, limits.max_samples_per_request, limits.max_message_bytes,
            read_ahead=config.fsync_per_batch,
        )
        run_once(servicer, min(args.messages, 1000), args.samples_per_message, args.window)
        runs = []
        for repeat in range(args.repeats):
            runs.append(run_once(servicer, args.messages, args.samples_per_message,
                                 args.window))
            print(f"[{repeat + 1}/{args.repeats}] {runs[-1]['messages_per_s']:,.0f} msgs/s, "
                  f"{runs[-1]['cpu_us_per_msg']:.0f} us CPU/msg", file=sys.stderr, flush=True)
        logged = sum(f.stat().st_size for f in Path(data.name).rglob("*.wal"))
    finally:
        server.stop(1)
        data.cleanup()
    result = {
        "model": f"{INPUT_DIM}->{UNITS} {RULE}",
        "samples_per_message": args.samples_per_message,
        "messages_per_s": statistics.median(r["messages_per_s"] for r in runs),
        "cpu_us_per_msg": statistics.median(r["cpu_us_per_msg"] for r in runs),
        "runs": runs,
        "log_bytes": logged,  # what the write-ahead log grew by, warm-up included
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"pipeline without gRPC, model {result['model']}, "
              f"{args.samples_per_message} sample(s)/message, median of {args.repeats}: "
              f"{result['messages_per_s']:,.0f} messages/s, "
              f"{result['cpu_us_per_msg']:.0f} us of CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
