"""Starting `pansynth serve`: one-line errors before listening, the class table, the worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from serve_testing import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    metadata_of,
    request,
    write_export,
    write_folder_dataset,
)

from pansynth.cli import main
from pansynth.inference import load_generator
from pansynth.serve.classes import build_class_table
from pansynth.serve.server import listen, load_painter, url_of
from pansynth.serve.worker import LatestWinsWorker, Superseded, WorkerClosed


def _run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["serve", *args])
    return code, capsys.readouterr().err


def test_missing_checkpoint_is_a_one_line_error(capsys, tmp_path):
    code, err = _run_cli(capsys, "--checkpoint", str(tmp_path / "nowhere"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pansynth serve: error:") and "nowhere" in err


def test_damaged_weights_are_a_one_line_error(capsys, tmp_path):
    export = write_export(tmp_path / "export", None, None)
    (export / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    code, err = _run_cli(capsys, "--checkpoint", str(export))
    assert code == 2
    assert err.count("\n") == 1 and "cannot load a generator" in err and str(export) in err


def test_dataset_with_other_classes_is_a_one_line_error(capsys, tmp_path, export_dir):
    root = write_folder_dataset(tmp_path / "data", ["a", "b"], [1], ["x"], (8, 8))
    code, err = _run_cli(capsys, "--checkpoint", str(export_dir), "--root", str(root))
    assert code == 2 and err.count("\n") == 1 and "2 classes" in err and f"{NUM_CLASSES}" in err


def test_taken_port_is_a_one_line_error(capsys, export_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, err = _run_cli(capsys, "--checkpoint", str(export_dir), "--port", str(port))
    assert code == 2 and err.count("\n") == 1 and f"--port {port}" in err


@pytest.mark.parametrize("args", [["--port", "70000"], ["--max-upload-mb", "0"], ["--split", "val"]])
def test_bad_arguments_are_one_line_errors(capsys, export_dir, args):
    code, err = _run_cli(capsys, "--checkpoint", str(export_dir), *args)
    assert code == 2 and err.count("\n") == 1 and args[0] in err


def test_serve_command_prints_the_url_and_serves(tmp_path, export_dir):
    """The real command in a subprocess: it prints the URL of a 127.0.0.1 server that answers."""
    root = write_folder_dataset(
        tmp_path / "data", ["s0", "s1", "s2", "t3", "t4"], [3, 4], ["b_scene", "a_scene"], (16, 32), split="val"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    command = [
        sys.executable,
        "-m",
        "pansynth",
        "serve",
        "--checkpoint",
        str(export_dir),
        "--port",
        "0",
        "--device",
        "cpu",
        "--root",
        str(root),
        "--split",
        "val",
    ]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("pansynth serve: http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split()[2]
        status, _, body = request(f"{url}api/info")
        info = json.loads(body)
        # the export's names win over the dataset's
        assert status == 200 and info["names_source"] == "checkpoint"
        assert [c["name"] for c in info["classes"][:NUM_CLASSES]] == CLASS_NAMES
        assert info["samples"] == ["a_scene", "b_scene"]
        status, _, body = request(f"{url}api/samples/0")
        assert status == 200 and json.loads(body)["name"] == "a_scene"
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
        process.stderr.close()


def test_listen_binds_loopback_by_default_and_reports_the_url(export_dir):
    app = load_painter(load_generator(export_dir, device="cpu"))
    server = listen(app)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1" and port > 0
        assert url_of(server, "127.0.0.1") == f"http://127.0.0.1:{port}/"
        assert url_of(server, "0.0.0.0") == f"http://127.0.0.1:{port}/"
    finally:
        server.server_close()
        app.close()


# ---------------------------------------------------------------------- class table
def test_class_table_from_the_export(export_dir):
    table = build_class_table(NUM_CLASSES, IGNORE_INDEX, metadata_of(export_dir))
    assert (table.names, table.things, table.source) == (CLASS_NAMES, [2, 3], "checkpoint")
    assert table.background == IGNORE_INDEX  # the eraser paints "unlabeled" when the model has it
    # the run directory holding export/ finds the same names
    run = export_dir.parent / "run_like"
    if not run.exists():
        run.mkdir()
        (run / "export").symlink_to(export_dir)
    assert build_class_table(NUM_CLASSES, None, metadata_of(run)).names == CLASS_NAMES


def test_class_table_without_names_paints_everything_as_stuff(tmp_path):
    export = write_export(tmp_path / "export", None, None)
    table = build_class_table(NUM_CLASSES, None, metadata_of(export))
    assert table.names == [f"class {i}" for i in range(NUM_CLASSES)]
    assert table.things == [] and table.source == "none" and table.background == 0
    assert any("stuff" in note for note in table.notes)


@pytest.mark.parametrize(
    ("names", "things"),
    [(["a", "b"], [1]), (CLASS_NAMES, [9]), (CLASS_NAMES, "car"), ([1, 2, 3, 4, 5], [])],
)
def test_class_table_ignores_malformed_names_with_a_note(tmp_path, names, things):
    export = write_export(tmp_path / "export", names, things)
    table = build_class_table(NUM_CLASSES, None, metadata_of(export))
    assert table.source == "none" and any("config.json" in note for note in table.notes)


def test_background_is_the_first_stuff_class_without_ignore(tmp_path):
    export = write_export(tmp_path / "export", CLASS_NAMES, [0, 1, 3])
    assert build_class_table(NUM_CLASSES, None, metadata_of(export)).background == 2


# ---------------------------------------------------------------------- worker
def test_worker_supersedes_only_waiting_jobs_and_closes_cleanly():
    started, release = threading.Event(), threading.Event()
    done = []

    def work(payload):
        started.set()
        assert release.wait(10)
        done.append(payload)
        return payload * 10

    worker = LatestWinsWorker(work)
    running = worker.submit(1)
    assert started.wait(10)
    waiting = [worker.submit(value) for value in (2, 3, 4)]
    release.set()
    assert running.wait(10) == 10 and waiting[-1].wait(10) == 40
    for job in waiting[:-1]:
        with pytest.raises(Superseded):
            job.wait(10)
    assert done == [1, 4]
    worker.close()
    with pytest.raises(WorkerClosed):
        worker.submit(5).wait(1)


def test_worker_close_answers_the_waiting_job():
    started, release = threading.Event(), threading.Event()

    def work(payload):
        started.set()
        return release.wait(10)

    worker = LatestWinsWorker(work)
    worker.submit(0)
    assert started.wait(10)
    waiting = worker.submit(1)
    closer = threading.Thread(target=worker.close)
    closer.start()
    with pytest.raises(WorkerClosed):
        waiting.wait(10)
    release.set()
    closer.join(10)
