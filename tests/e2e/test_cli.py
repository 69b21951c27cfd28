"""The `hebbian` command's client subcommands, run as subprocesses against `hebbian serve`."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading

import numpy as np
import pytest

from tests.server_process import free_port, hebbian_command


def hebbian(*args: str, target: str | None = None, stdin: str | None = None):
    """Runs `hebbian [--target T] args...`; returns the CompletedProcess (text)."""
    command = [*hebbian_command(), *(["--target", target] if target else []), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120,
                          check=False)


def csv_lines(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.4f}" for v in row) for row in rows) + "\n"


def rows(n: int, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width))


def parse_rows(text: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in text.splitlines()])


def step_of(target: str, model: str = "default") -> int:
    result = hebbian("models", "get", model, target=target)
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout).get("step", 0))


@pytest.fixture
def target(hebbian_server):
    return hebbian_server.target


def test_process_values_prints_one_csv_line_of_4_activations_and_the_step(target):
    before = step_of(target)
    values = ",".join(f"{v:.3f}" for v in rows(1)[0])

    result = hebbian("process", f"--values={values}", target=target)

    assert result.returncode == 0, result.stderr
    assert parse_rows(result.stdout).shape == (1, 4)
    assert result.stderr.strip() == f"model default: step {before + 1}"


def test_process_reads_a_csv_file_with_a_header(target, tmp_path):
    path = tmp_path / "samples.csv"
    path.write_text(",".join(f"ch{i}" for i in range(16)) + "\n" + csv_lines(rows(3)))

    result = hebbian("process", "--file", str(path), "--no-learn", target=target)

    assert result.returncode == 0, result.stderr
    assert parse_rows(result.stdout).shape == (3, 4)


def test_process_reads_csv_from_stdin_and_json_output_has_the_step(target):
    before = step_of(target)

    result = hebbian("process", "--json", "--request-id", "cli-1", target=target,
                     stdin=csv_lines(rows(2, seed=1)))

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["step"] == before + 2
    assert answer["request_id"] == "cli-1"
    assert np.array(answer["activations"]).shape == (2, 4)


def test_process_no_learn_leaves_the_step(target):
    before = step_of(target)
    result = hebbian("process", "--no-learn", target=target, stdin=csv_lines(rows(2)))
    assert result.returncode == 0, result.stderr
    assert step_of(target) == before


def test_a_server_error_is_one_line_with_its_status_and_exit_code_1(target):
    result = hebbian("process", "--values", "1,2,3", target=target)

    assert result.returncode == 1
    assert result.stderr.startswith("hebbian: INVALID_ARGUMENT: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_models_create_list_get_reset_delete(target, tmp_path):
    created = hebbian("models", "create", "cli-model", "--input-dim", "8",
                      "--layer", "units=3,rule=sanger,learning_rate=0.005,seed=11", target=target)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "cli-model"

    listing = hebbian("models", "list", target=target)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert lines["cli-model"][1:] == ["0", "8->3", "sanger"]
    assert lines["default"][1] == "*"

    hebbian("process", "--model", "cli-model", target=target, stdin=csv_lines(rows(5, 8)))
    assert step_of(target, "cli-model") == 5
    reset = hebbian("reset", "cli-model", "--seed", "4", target=target)
    assert reset.stdout.strip() == "model cli-model: reset, step 0"

    deleted = hebbian("models", "delete", "cli-model", target=target)
    assert deleted.returncode == 0, deleted.stderr
    missing = hebbian("models", "get", "cli-model", target=target)
    assert missing.returncode == 1
    assert missing.stderr.startswith("hebbian: NOT_FOUND: ")


def test_models_create_from_a_yaml_config_file(target, tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("input_dim: 5\nlayers:\n  - {units: 2, rule: oja_subspace, seed: 1}\n")

    created = hebbian("models", "create", "cli-yaml", "--config", str(config), target=target)

    assert created.returncode == 0, created.stderr
    model = json.loads(created.stdout)
    assert model["config"]["input_dim"] == 5
    assert model["config"]["layers"][0]["rule"] == "oja_subspace"
    assert hebbian("models", "delete", "cli-yaml", target=target).returncode == 0


def test_stream_synthetic_reports_convergence_and_a_summary(target):
    hebbian("models", "create", "cli-stream", "--input-dim", "8",
            "--layer", "units=2,rule=sanger,learning_rate=0.01,seed=3", target=target)
    try:
        result = hebbian("stream", "--synthetic", "--model", "cli-stream", "--count", "3000",
                         "--batch", "50", "--report-every", "1000", target=target)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split()[:2] == ["step", "|cos|"]
        reports = [[float(v) for v in line.split()] for line in lines[1:4]]
        steps = [int(report[0]) for report in reports]
        assert all(1000 * (k + 1) <= step <= 3000 for k, step in enumerate(steps)), steps
        assert lines[4].startswith("streamed 3000 samples")
        assert "step 0 -> 3000" in lines[4]
        table = lines[lines.index("  unit   |cos(row, component)|   row norm") + 1:][:2]
        cosines = [float(line.split()[1]) for line in table]
        assert cosines[0] > 0.95, result.stdout
        assert "principal subspace captured" in result.stdout
        assert step_of(target, "cli-stream") == 3000
    finally:
        hebbian("models", "delete", "cli-stream", target=target)


def test_stream_synthetic_json_summary_has_the_reports_and_the_comparison(target):
    hebbian("models", "create", "-m", "cli-stream-json", "--input-dim", "8",
            "--layer", "units=2,rule=sanger,learning_rate=0.01,seed=3", target=target)
    try:
        result = hebbian("stream", "--synthetic", "-m", "cli-stream-json", "--count", "600",
                         "--batch", "50", "--report-every", "300", "--json", target=target)
    finally:
        hebbian("models", "delete", "-m", "cli-stream-json", target=target)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["model"], summary["samples"], summary["step"]) == ("cli-stream-json", 600,
                                                                       600)
    assert len(summary["reports"]) == 2
    assert len(summary["synthetic"]["cosines"]) == 2
    assert 0 <= summary["synthetic"]["subspace"] <= 1


def test_stream_from_a_csv_file_writes_every_activation(target, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(csv_lines(rows(130, seed=4)))
    before = step_of(target)

    result = hebbian("stream", "--file", str(source), "--batch", "64", "--output", str(output),
                     target=target)

    assert result.returncode == 0, result.stderr
    assert parse_rows(output.read_text()).shape == (130, 4)
    assert f"step {before} -> {before + 130}" in result.stdout


def test_stream_from_stdin_with_count_stops_early(target):
    before = step_of(target)

    result = hebbian("stream", "--count", "7", "--batch", "3", "--no-learn", "--output", "-",
                     target=target, stdin=csv_lines(rows(20, seed=5)))

    assert result.returncode == 0, result.stderr
    assert parse_rows(result.stdout).shape == (7, 4)
    assert "streamed 7 samples" in result.stderr
    assert step_of(target) == before


@pytest.mark.parametrize("args", [["models", "list"], ["process", "--values", "1,2"],
                                  ["stream", "--synthetic"], ["reset"]])
def test_an_unreachable_server_is_one_clear_line_and_exit_code_1(args):
    result = hebbian(*args, target=f"127.0.0.1:{free_port()}")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("hebbian: cannot reach the Hebbian server at 127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_stream_reads_a_tsv_file_with_a_timestamp_column_by_column_numbers(target, tmp_path):
    source = tmp_path / "sensor.tsv"
    header = "\t".join(["time", *(f"ch{i}" for i in range(16))])
    lines = [f"2026-01-01T00:00:{i:02d}\t" + "\t".join(f"{v:.4f}" for v in row)
             for i, row in enumerate(rows(9, seed=6))]
    source.write_text(header + "\n" + "\n".join(lines) + "\n")
    before = step_of(target)

    result = hebbian("stream", "--file", str(source), "--columns", "2-17", "--batch", "4",
                     "--json", target=target)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["samples"], summary["start_step"], summary["step"]) == (9, before, before + 9)


def test_process_takes_a_delimiter_and_columns_by_header_name(target, tmp_path):
    source = tmp_path / "sensor.csv"
    names = [f"ch{i}" for i in range(16)]
    source.write_text(";".join(["label", *names]) + "\n"
                      + "\n".join("x;" + ";".join(f"{v:.3f}" for v in row) for row in rows(2))
                      + "\n")

    result = hebbian("process", "--file", str(source), "--delimiter", ";", "--columns",
                     ",".join(names), "--no-learn", target=target)

    assert result.returncode == 0, result.stderr
    assert parse_rows(result.stdout).shape == (2, 4)


def test_a_ragged_row_in_a_file_stops_stream_before_anything_is_sent(target, tmp_path):
    source = tmp_path / "ragged.csv"
    good = csv_lines(rows(3, seed=7)).splitlines()
    source.write_text("\n".join([*good[:2], "1,2,3", good[2]]) + "\n")
    before = step_of(target)

    result = hebbian("stream", "--file", str(source), "--batch", "1", target=target)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"hebbian: {source}, line 3: 3 columns, expected 16 (as on line 1); a ragged row, "
        "or give --delimiter")
    assert step_of(target) == before


def test_a_bad_cell_on_stdin_names_line_and_column_after_the_rows_before_it(target):
    lines = csv_lines(rows(3, seed=8)).splitlines()
    cells = lines[2].split(",")
    cells[4] = "oops"
    before = step_of(target)

    result = hebbian("stream", "--batch", "1", target=target,
                     stdin="\n".join([*lines[:2], ",".join(cells)]) + "\n")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hebbian: stdin, line 3, column 5: not a finite number: 'oops'; pick the sample's "
        "columns with --columns (the 2 samples before it were sent and answered)")
    assert "UNKNOWN" not in result.stderr
    assert step_of(target) == before + 2


def test_model_commands_take_dash_m_and_print_json(target):
    created = hebbian("models", "create", "-m", "cli-json", "--input-dim", "4",
                      "--layer", "units=2,seed=1", target=target)
    assert created.returncode == 0, created.stderr
    try:
        hebbian("process", "-m", "cli-json", "--values=1,2,3,4", target=target)
        snapshot = hebbian("snapshot", "-m", "cli-json", "--json", target=target)
        assert snapshot.returncode == 0, snapshot.stderr
        taken = json.loads(snapshot.stdout)
        assert int(taken["step"]) == 1

        listed = json.loads(hebbian("snapshots", "-m", "cli-json", "--json",
                                    target=target).stdout)
        assert taken["snapshot_id"] in [s["snapshot_id"] for s in listed]

        reset = json.loads(hebbian("reset", "-m", "cli-json", "--json", target=target).stdout)
        assert (reset["name"], reset.get("step", "0")) == ("cli-json", "0")

        restored = hebbian("restore", taken["snapshot_id"], "-m", "cli-json", "--json",
                           target=target)
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["step"] == "1"
        assert step_of(target, "cli-json") == 1
    finally:
        deleted = hebbian("models", "delete", "-m", "cli-json", "--json", target=target)
    assert json.loads(deleted.stdout) == {"name": "cli-json", "deleted": True}


def test_stream_on_a_terminal_shows_rate_and_eta_and_nothing_in_a_pipe(target, tmp_path):
    source = tmp_path / "many.csv"
    source.write_text(csv_lines(rows(3000, seed=9)))
    primary, secondary = pty.openpty()
    output = bytearray()
    reader = threading.Thread(target=_drain, args=(primary, output), daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [*hebbian_command(), "--target", target, "stream", "--file", str(source),
             "--batch", "10"],
            stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=120, check=False,
        )
    finally:
        os.close(secondary)
        reader.join(10)
        os.close(primary)

    assert done.returncode == 0
    assert "streamed 3000 samples" in done.stdout
    shown = output.decode(errors="replace")
    assert "samples/s" in shown and "ETA" in shown and "/3000" in shown, shown


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)
