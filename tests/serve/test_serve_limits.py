"""Refused request bodies never stall the painter: real HTTP exchanges over a socket with a timeout.

A form of too many parts is answered at once, an oversized chunked upload gets its 413 and the
connection closes, a client that stops sending a refused body is let go; bad limits are refused
on the command line."""

from __future__ import annotations

import json
import socket
import time

import pytest
from serve_testing import make_app, multipart, png_bytes, running, scene_maps

import pansynth.serve.app as app_module
from pansynth.cli import main

UPLOAD_LIMIT = 16 * 1024
TIMEOUT_S = 20  # far above any answer of a working server, on a busy machine


@pytest.fixture(scope="module")
def base(generator, export_dir):
    app = make_app(generator, export_dir, max_upload_bytes=UPLOAD_LIMIT)
    try:
        with running(app) as url:
            yield url
    finally:
        app.close()


def exchange(base: str, head: str, body: bytes) -> tuple[int, dict, bytes]:
    """Send a request, then read until the server closes the connection (socket.timeout if it does not)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as connection:
        connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    header_text, _, payload = received.partition(b"\r\n\r\n")
    lines = header_text.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, payload


def _form(extra_fields: int) -> tuple[bytes, str]:
    semantic, panoptic = scene_maps()
    files = {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic)}
    files.update({f"field{i}": b"1" for i in range(extra_fields)})
    return multipart(files)


def test_a_form_of_more_than_eight_parts_is_answered_at_once(base):
    for parts, expected in ((8, 200), (9, 400), (40, 400)):
        body, content_type = _form(parts - 2)
        head = (
            f"POST /api/synthesize HTTP/1.1\nHost: {base[7:]}\nContent-Type: {content_type}\n"
            f"Content-Length: {len(body)}\n"
        )
        start = time.monotonic()
        status, headers, payload = exchange(base, head, body)
        assert status == expected, payload
        if expected == 400:
            assert "more than 8 parts" in json.loads(payload)["error"]
        else:
            assert headers["Content-Type"] == "image/png"
        assert time.monotonic() - start < TIMEOUT_S


def _chunked(data: bytes, size: int = 1000) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


def test_an_oversized_chunked_upload_gets_413_and_the_connection_closes(base):
    body, content_type = multipart({"semantic": b"\x89PNG\r\n\x1a\n" + bytes(4 * UPLOAD_LIMIT), "panoptic": b""})
    head = (
        f"POST /api/synthesize HTTP/1.1\nHost: {base[7:]}\nContent-Type: {content_type}\nTransfer-Encoding: chunked\n"
    )
    status, headers, payload = exchange(base, head, _chunked(body))  # returns only once the server closed
    assert status == 413 and "too large" in json.loads(payload)["error"]
    assert headers["Connection"] == "close"
    # A small chunked form of too many parts is told so, not "too large".
    small, small_type = _form(10)
    status, _, payload = exchange(base, head.replace(content_type, small_type), _chunked(small))
    assert status == 400 and "more than 8 parts" in json.loads(payload)["error"]


def test_a_client_that_stops_sending_a_refused_body_is_let_go(base, monkeypatch):
    monkeypatch.setattr(app_module, "_DRAIN_TIMEOUT_S", 0.5)
    body, content_type = _form(0)
    head = (
        f"POST /api/maps HTTP/1.1\nHost: {base[7:]}\nContent-Type: {content_type}\n"
        f"Content-Length: {UPLOAD_LIMIT * 4}\n"  # announces more than it sends
    )
    status, _, payload = exchange(base, head, body)
    assert status == 413 and "too large" in json.loads(payload)["error"]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e-9"])
def test_a_bad_upload_limit_is_a_command_line_error(tmp_path, capsys, value):
    assert main(["serve", "--checkpoint", str(tmp_path), "--max-upload-mb", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--max-upload-mb must be a positive number of MiB, got {float(value)}" in err
