"""Log output: JSON lines (service/server/observability/logs.py) and TensorFlow's start-up
noise kept out of stderr (service/tf_noise.py)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from service import tf_noise
from service.server.observability.logs import configure_logging, json_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook = hooks
    logging.captureWarnings(False)


def test_json_records_are_one_object_per_line_with_time_level_logger_message(restore_logging):
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = logging.getLogger("service.server")
    log.info("model %r recovered\nat step %d", "pca", 42)
    log.debug("not at info level")
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("snapshot failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library warning", UserWarning, stacklevel=1)

    assert json_logging()
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(lines) == 3
    first = records[0]
    assert first["level"] == "INFO" and first["logger"] == "service.server"
    assert first["message"] == "model 'pca' recovered\nat step 42"  # newline escaped, one line
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert records[1]["level"] == "ERROR" and "ValueError: broken" in records[1]["exception"]
    assert records[2]["logger"] == "py.warnings" and "a library warning" in records[2]["message"]


def test_text_format_and_reconfiguring_does_not_duplicate_lines(restore_logging):
    out = io.StringIO()
    configure_logging("warning", "text", out)
    configure_logging("warning", "text", out)
    logging.getLogger("x").warning("once")
    logging.getLogger("x").info("hidden")
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" WARNING x: once")
    assert not json_logging()
    with pytest.raises(ValueError, match="text or json"):
        configure_logging("info", "xml", out)


def test_tensorflow_log_level_defaults_to_fatal_only_without_a_gpu(tmp_path):
    assert tf_noise.default_log_level({}, gpu=False) == "3"
    assert tf_noise.default_log_level({}, gpu=True) == "2"
    assert tf_noise.default_log_level({"TF_CPP_MIN_LOG_LEVEL": "0"}, gpu=False) == "0"
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    assert not tf_noise.has_nvidia_device(tmp_path / "dev", tmp_path / "proc")
    (tmp_path / "dev" / "nvidia0").touch()
    assert tf_noise.has_nvidia_device(tmp_path / "dev", tmp_path / "proc")


def test_filtered_stderr_drops_the_known_noise_and_keeps_everything_else(capfd):
    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1.5 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
        "will not be used.\n"
        "E0000 00:00:1.7 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    )
    with tf_noise.filtered_stderr():
        os.write(2, noise.encode())
        os.write(2, b"E0000 real_error.cc:1] something TensorFlow really means\n")
        print("python stderr line", file=sys.stderr)
    captured = capfd.readouterr()
    assert sorted(captured.err.splitlines()) == [
        "E0000 real_error.cc:1] something TensorFlow really means", "python stderr line",
    ]


def test_importing_tensorflow_through_the_package_prints_no_noise():
    # a fresh interpreter without TF_CPP_MIN_LOG_LEVEL, as `hebbian serve` starts; the
    # XLA compilation is where the cuInit error would appear
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "import service, os, sys\n"
        "import tensorflow as tf\n"
        "f = tf.function(lambda x: x * 2, jit_compile=True)\n"
        "print(float(f(tf.constant(2.0))), os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    expected = "2" if tf_noise.has_nvidia_device() else "3"
    assert result.stdout.split() == ["4.0", expected]
    assert result.stderr == ""
