"""The `hebbian` command without a server: parsing, input formats, fast start."""

import io
import re
import subprocess
import sys

import numpy as np
import pytest

from service import cli
from service.cli_csv import CsvFormat, csv_batches, csv_rows
from service.cli_io import InputError, format_rows, parse_values
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
    (["1,2", "3"], "in.csv, line 2: 1 columns, expected 2 (as on line 1)"),
    (["1,2", "x,y"], "in.csv, line 2, column 1: not a finite number: 'x'"),
    (["a,b", "# c", "", "1,2", "3,nan"], "in.csv, line 5, column 2 (b): not a finite number"),
    (["t,x", '"12:00",1', '"12:01",2'], "in.csv, line 2, column 1 (t): not a finite number: "
     "'12:00'; pick the sample's columns with --columns"),
])
def test_bad_input_names_the_source_line_and_column(lines, message):
    with pytest.raises(InputError, match=re.escape(message)):
        list(csv_rows(lines, source="in.csv"))


@pytest.mark.parametrize(("lines", "fmt", "want"), [
    (["1\t2\t3", "4\t5\t6"], CsvFormat(), [[1, 2, 3], [4, 5, 6]]),  # TSV detected
    (["1 2  3", " 4 5 6"], CsvFormat(), [[1, 2, 3], [4, 5, 6]]),  # runs of spaces
    (["1;2", "3;4"], CsvFormat(delimiter=";"), [[1, 2], [3, 4]]),
    (["time,x,y", "t0,1,2", "t1,3,4"], CsvFormat(columns=("x", "y")), [[1, 2], [3, 4]]),
    (["time,x,y", "t0,1,2"], CsvFormat(columns=("2-3",)), [[1, 2]]),
    (["9,1,2", "8,3,4"], CsvFormat(columns=("3", "2")), [[2, 1], [4, 3]]),
    (['"1","2"', '"3","4"'], CsvFormat(), [[1, 2], [3, 4]]),  # quoted cells
    (["1,2", "3,4"], CsvFormat(header=True), [[3, 4]]),  # a numeric header, declared
])
def test_delimiters_headers_and_column_selection(lines, fmt, want):
    assert [row.tolist() for row in csv_rows(lines, fmt)] == want


@pytest.mark.parametrize(("lines", "fmt", "message"), [
    (["x,y", "1,2"], CsvFormat(header=False), "line 1, column 1: not a finite number: 'x'"),
    (["1,2"], CsvFormat(columns=("x",)), "is a name, and there is no header row"),
    (["a,b", "1,2"], CsvFormat(columns=("c",)), "no column 'c'; the header has a, b"),
    (["1,2"], CsvFormat(columns=("2-5",)), "--columns 2-5: the rows have 2 columns"),
])
def test_header_and_column_mistakes_are_named(lines, fmt, message):
    with pytest.raises(InputError, match=message):
        list(csv_rows(lines, fmt))


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


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"hebbian {cli.version()} (API hebbian.v1)\n"


@pytest.mark.parametrize(("args", "message"), [
    (["models", "create", "t", "--input-dim", "8", "--layer", "units=two"],
     "hebbian: layer 0: units must be an integer; got 'two'"),
    (["models", "create", "t", "--input-dim", "8", "--layer", "units=2,learning_rate=fast"],
     "hebbian: layer 0: learning_rate must be a number; got 'fast'"),
    (["models", "create", "--input-dim", "8", "--layer", "units=2"],
     "hebbian: models create needs a name: models create -m NAME ..."),
    (["reset", "a", "-m", "b"], "hebbian: two model names: 'a' and -m 'b'; give one"),
    (["process", "--values", "1,x"], "hebbian: --values: could not convert string to float"),
])
def test_bad_arguments_are_one_line_and_exit_code_2_without_a_server(args, message, capsys):
    assert cli.main(["--target", "127.0.0.1:1", *args]) == 2

    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_stream_checks_a_file_before_it_asks_the_server(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\n3\tx\n")

    assert cli.main(["--target", "127.0.0.1:1", "stream", "--file", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"hebbian: {bad}, line 2, column 2: not a finite number: 'x'; pick the sample's "
        "columns with --columns\n")
    assert cli.main(["--target", "127.0.0.1:1", "stream", "--file", str(tmp_path / "no")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["stream", "--batch", "x"], ["stream", "--delimiter", "ab"],
                                  ["models", "list", "--timeout", "-1"],
                                  ["process", "--columns", "0-3"], ["completion", "fish"]])
def test_bad_flag_values_are_usage_errors_without_a_traceback(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "error: argument" in err and "Traceback" not in err


@pytest.mark.parametrize("command", [
    ["reset"], ["snapshot"], ["snapshots"], ["export", "--out", "x.keras"],
    ["restore", "0001"], ["models", "get"], ["models", "delete"], ["models", "create"],
    ["process"], ["stream"],
])
def test_every_model_command_takes_dash_m_and_json(command):
    parser = cli.build_parser()
    args = parser.parse_args([*command, "-m", "pca", "--json"])

    assert (args.model, args.json) == ("pca", True)


def test_the_older_positional_model_name_still_works():
    parser = cli.build_parser()
    from service.cli_models import model_name

    assert model_name(parser.parse_args(["reset", "pca"])) == "pca"
    assert model_name(parser.parse_args(["restore", "0001", "pca"])) == "pca"
    assert model_name(parser.parse_args(["restore", "0001", "pca", "-m", "pca"])) == "pca"
    assert model_name(parser.parse_args(["snapshot"])) == ""


def complete(script: str, *words: str) -> list[str]:
    """The words bash completes for `words` (the last one is being typed)."""
    quoted = " ".join(f"'{word}'" for word in words)
    driver = (f'{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n'
              '_hebbian; printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=30,
                          check=True)
    assert done.stderr == ""
    return done.stdout.split()


@pytest.fixture(scope="module")
def bash_completion():
    result = subprocess.run([sys.executable, "-m", "service.cli", "completion", "bash"],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_bash_completion_follows_the_parser(bash_completion):
    assert "completion" in complete(bash_completion, "hebbian", "")
    assert complete(bash_completion, "hebbian", "mo") == ["models"]
    assert complete(bash_completion, "hebbian", "models", "") == ["list", "create", "get",
                                                                  "update", "delete"]
    stream_options = complete(bash_completion, "hebbian", "--target", "h:1", "stream", "--")
    assert {"--delimiter", "--columns", "--json", "--model", "--synthetic"} <= set(
        stream_options)
    assert complete(bash_completion, "hebbian", "completion", "") == ["bash", "zsh"]
    assert "--data-dir" in complete(bash_completion, "hebbian", "serve", "--d")
    assert "--scenarios" in complete(bash_completion, "hebbian", "bench", "--sc")


def test_bash_completion_completes_file_names_after_file_options(bash_completion, tmp_path):
    (tmp_path / "samples.tsv").write_text("1\t2\n")
    prefix = str(tmp_path / "sam")

    assert complete(bash_completion, "hebbian", "stream", "--file", prefix) == [
        str(tmp_path / "samples.tsv")]
    assert complete(bash_completion, "hebbian", "stream", "--target", prefix) == []


def test_zsh_completion_runs_the_same_function_through_bashcompinit():
    result = subprocess.run([sys.executable, "-m", "service.cli", "completion", "zsh"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.startswith("#compdef hebbian\n")
    assert "bashcompinit" in result.stdout and "complete -o filenames -F _hebbian" in result.stdout


def test_progress_draws_nothing_without_a_terminal(capsys):
    from service.cli_io import Progress

    with Progress(10) as progress:
        progress.update(5, note="step 5")
        progress.write("a report line", sys.stdout)

    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("a report line\n", "")
