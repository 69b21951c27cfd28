"""The `hebbian` command without a server: parsing, input formats, fast start."""

import io
import subprocess
import sys

import numpy as np
import pytest

from service import cli
from service.cli_io import InputError, csv_batches, csv_rows, format_rows, parse_values
from service.client import config_from_proto, config_to_proto, decode_tensor, encode_samples


def test_help_does_not_import_tensorflow_or_the_server():
    code = (
        "import sys\nfrom service.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow' "
        "or m.startswith('service.server')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip().endswith("[]")
    assert "serve" in result.stdout and "stream" in result.stdout


def test_client_options_are_accepted_before_and_after_the_subcommand(monkeypatch):
    monkeypatch.setenv("HEBBIAN_TARGET", "example:1")
    parser = cli.build_parser()

    assert parser.parse_args(["models", "list"]).target == "example:1"
    assert parser.parse_args(["--target", "a:1", "models", "list"]).target == "a:1"
    assert parser.parse_args(["models", "list", "--target", "b:2"]).target == "b:2"
    assert parser.parse_args(["reset", "--timeout", "3"]).timeout == 3.0


def test_unknown_flags_of_client_commands_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["process", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_csv_rows_skip_header_blank_lines_and_comments():
    lines = ["a,b,c", "", "# note", "1, 2, 3", "4,5,6e-1"]
    assert [row.tolist() for row in csv_rows(lines)] == [[1, 2, 3], [4, 5, pytest.approx(0.6)]]


@pytest.mark.parametrize(("lines", "message"), [
    (["1,2", "3"], "line 2: 1 values, expected 2"),
    (["1,2", "x,y"], "line 2: not a row of numbers"),
])
def test_bad_csv_names_the_line(lines, message):
    with pytest.raises(InputError, match=message):
        list(csv_rows(lines))


def test_csv_batches_group_rows_and_stop_at_count():
    lines = [f"{i},{i}" for i in range(10)]
    assert [len(b) for b in csv_batches(lines, 4)] == [4, 4, 2]
    assert [len(b) for b in csv_batches(lines, 4, count=6)] == [4, 2]


def test_values_and_rows_round_trip():
    sample = parse_values("1, -2.5 3e-3")
    assert sample.tolist() == [1.0, -2.5, pytest.approx(0.003)]
    assert format_rows(np.array([[1.0, -2.5], [0.1, 3.0]], np.float32)) == "1,-2.5\n0.1,3"
    with pytest.raises(InputError):
        parse_values(" , ")


def test_process_with_a_terminal_stdin_and_no_samples_says_what_to_do(monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    assert cli.main(["--target", "127.0.0.1:1", "process"]) == 2
    assert "give --values or --file, or pipe CSV rows into stdin" in capsys.readouterr().err


def test_samples_travel_as_raw_little_endian_float32():
    tensor = encode_samples([[1.0, 2.0], [3.0, 4.5]])

    assert list(tensor.shape) == [2, 2]
    assert tensor.raw == np.array([1, 2, 3, 4.5], "<f4").tobytes()
    assert not tensor.values
    np.testing.assert_array_equal(decode_tensor(tensor), [[1, 2], [3, 4.5]])
    assert list(encode_samples([1.0, 2.0]).shape) == [1, 2]


def test_decode_accepts_values_too():
    tensor = encode_samples(np.zeros((1, 3)))
    tensor.ClearField("raw")
    tensor.values.extend([1, 2, 3])
    np.testing.assert_array_equal(decode_tensor(tensor), [[1, 2, 3]])


def test_model_config_round_trips_through_the_proto():
    config = {"input_dim": 16, "layers": [
        {"units": 8, "rule": "sanger", "learning_rate": 0.5, "seed": 3},
        {"units": 4, "rule": "oja_subspace", "lateral": None, "granularity": "per_sample"},
    ]}
    proto = config_to_proto(config)

    assert config_from_proto(proto) == {"input_dim": 16, "layers": [
        {"units": 8, "rule": "sanger", "learning_rate": 0.5, "seed": 3},
        {"units": 4, "rule": "oja_subspace", "granularity": "per_sample"},
    ]}
    with pytest.raises(ValueError, match="layer 0: setting 'colour'"):
        config_to_proto({"input_dim": 2, "layers": [{"units": 1, "colour": "red"}]})


def test_serve_flags_come_from_the_server_module(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])

    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: hebbian serve")
    for flag in ("--host", "--port", "--metrics-port", "--data-dir", "--config"):
        assert flag in usage
