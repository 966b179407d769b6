"""Start the painter: take the generator, check everything, listen, print the URL."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import numpy as np
from werkzeug.serving import BaseWSGIServer, make_server

from pansynth.data import build_dataset
from pansynth.models import Generator
from pansynth.serve.app import DEFAULT_MAX_UPLOAD_BYTES, PainterApp, QuietRequestHandler, SampleList, allowed_hosts_for
from pansynth.serve.classes import build_class_table


def load_painter(
    generator: Generator,
    root: str | os.PathLike | None = None,
    dataset: str = "folder",
    split: str | None = None,
    host: str = "127.0.0.1",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    title: str = "pansynth",
) -> PainterApp:
    """Build the application for a loaded generator, raising a one-line error for anything wrong.

    The generator is run once on a blank map so that a model that cannot synthesize fails now
    rather than at the first stroke (and the first stroke is not slowed by the first call's warm-up).

    Raises:
        FileNotFoundError, ValueError: a dataset that cannot be read or does not match the model, or a
            generator that fails on a blank map.
    """
    size = tuple(int(v) for v in generator.output_size)
    samples = None
    dataset_object: Any = None
    if root is not None:
        dataset_object = build_dataset(dataset, root, split=split)
        if int(dataset_object.num_classes) != int(generator.num_classes):
            raise ValueError(
                f"--root {root} has {dataset_object.num_classes} classes but the generator ({title}) "
                f"was trained on {generator.num_classes}"
            )
        samples = SampleList(dataset_object, size)  # type: ignore[arg-type]
    classes = build_class_table(int(generator.num_classes), generator.ignore_index, generator.metadata, dataset_object)
    app = PainterApp(
        generator,
        classes,
        samples,
        max_upload_bytes=max_upload_bytes,
        allowed_hosts=allowed_hosts_for(host),
        title=title,
    )
    blank_semantic = np.full(size, classes.background, dtype=np.int64)
    try:
        app.worker.submit((blank_semantic, np.zeros(size, dtype=np.int64))).wait()
    except Exception as error:
        app.close()
        raise ValueError(f"{title}: the generator fails on a blank map ({type(error).__name__}: {error})") from error
    return app


def listen(app: PainterApp, host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """A threaded HTTP server for ``app`` on ``host:port`` (port 0: any free port).

    The socket is bound here so that a taken port is a one-line ValueError. The caller runs
    ``server.serve_forever()``; to stop: ``server.shutdown()``, ``server.server_close()``, ``app.close()``.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: not an address of this machine ({error.strerror})") from error
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(64)
    except OSError as error:
        listener.close()
        raise ValueError(
            f"--port {port}: cannot listen on {host}:{port} ({error.strerror}); choose another --port (0: any free one)"
        ) from error
    try:
        # werkzeug duplicates the descriptor: the server owns its own copy.
        server = make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler, fd=listener.fileno())
    finally:
        listener.close()
    server.daemon_threads = True
    return server


def url_of(server: BaseWSGIServer, host: str) -> str:
    """The URL to open for a server listening on ``host``."""
    port = server.server_address[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(
    generator: Generator,
    host: str = "127.0.0.1",
    port: int = 0,
    root: str | os.PathLike | None = None,
    dataset: str = "folder",
    split: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    title: str = "pansynth",
) -> None:
    """``pansynth serve``: build the page for ``generator``, listen, print the URL and serve until Ctrl+C."""
    app = load_painter(generator, root, dataset, split, host, max_upload_bytes, title)
    try:
        server = listen(app, host, port)
    except BaseException:
        app.close()
        raise
    height, width = app.size
    names = {"checkpoint": "class names from the checkpoint", "dataset": "class names from --root"}
    print(
        f"pansynth serve: {url_of(server, host)}  ({title}: {width}x{height} maps, "
        f"{app.num_classes} classes, {names.get(app.classes.source, 'no class names')}; Ctrl+C stops)",
        flush=True,
    )
    for note in app.classes.notes:
        print(f"pansynth serve: note: {note}", file=sys.stderr)
    if host in ("0.0.0.0", "::", ""):
        print(
            "pansynth serve: warning: listening on every network interface: anyone who can reach this machine "
            "can use the page",
            file=sys.stderr,
        )
    try:
        server.serve_forever()  # returns on Ctrl+C (werkzeug catches the KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
    print("pansynth serve: stopped", file=sys.stderr)
