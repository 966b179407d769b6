"""The painter's web application: one page, a JSON API, one synthesis worker.

Built on werkzeug (a WSGI toolkit): routing, multipart parsing with size limits and a threaded
development server, without a framework on top. See docs/serve.md for the API.

Endpoints::

    GET  /                       the page
    GET  /static/<name>          its script and style sheet (a fixed list of files read at start)
    GET  /api/info               model size, classes (palette), background class, dataset samples, limits, style
    POST /api/synthesize         multipart: semantic + panoptic PNG (+ optional style fields) -> image/png
    POST /api/maps               multipart: semantic + panoptic PNG -> the checked maps as JSON (uploads)
    GET  /api/samples/<index>    a dataset sample's maps as JSON (resized to the model's size)

Every refusal is ``{"error": "..."}`` with a 4xx status; a map superseded by a newer one before
it was synthesized is answered with 409 (see :mod:`pansynth.serve.worker`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from torch import nn
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import LimitedStream

from pansynth.data.transforms import resize_image
from pansynth.inference import style_by_class, synthesize
from pansynth.ops.maps import UNKNOWN, unknown_value
from pansynth.serve.classes import ClassTable
from pansynth.serve.maps import RequestError, check_classes, check_ids, decode_map_png, encode_png, resize_nearest
from pansynth.serve.worker import LatestWinsWorker, Superseded, WorkerClosed
from pansynth.viz import image_to_uint8

# The two map PNGs of a 512x1024 model take about 2.5 MB even uncompressed; 8 MiB leaves room.
DEFAULT_MAX_UPLOAD_BYTES = 8 * 2**20
# An oversized body up to this size is read and dropped so that the client gets the 413 answer
# (a server that closes the connection on unread data makes clients see a reset instead).
_DRAIN_LIMIT_BYTES = 64 * 2**20
# A client that stops sending the rest of a refused body holds its connection no longer than this.
_DRAIN_TIMEOUT_S = 5.0
# The two map files and the optional text fields, with room to spare; more parts are refused (400).
MAX_FORM_PARTS = 8
_STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "painter.js": "text/javascript; charset=utf-8",
    "painter.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere; images are blob: URLs made by the script.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")

# The style fields of POST /api/synthesize (style generators only); a style is {"seed", "restyle", "sample"}.
STYLE_FIELDS = ("style_seed", "style_restyle", "style_sample")
_MAX_SEED = 2**63 - 1

Renderer = Callable[..., bytes]  # (semantic, panoptic[, style=...]) -> PNG bytes


def make_renderer(generator: nn.Module, samples: SampleList | None = None) -> Renderer:
    """The worker's job: maps (ndarray[H, W] int64 each) [+ a style] -> PNG bytes of the synthesized image.

    A style (style generators only) is ``{"seed": int, "restyle": {id: seed}, "sample": index or None}``:
    codes drawn from (seed, segment id), restyled ids with their own seeds, and with a sample, every
    class the sample's photograph shows takes its style (its codes are computed once per sample).
    """
    class_codes_of: dict[int, dict[int, torch.Tensor]] = {}

    def render(semantic: np.ndarray, panoptic: np.ndarray, style: dict[str, Any] | None = None) -> bytes:
        options: dict[str, Any] = {}
        if style is not None:
            options = {"seed": style["seed"], "restyle": style["restyle"]}
            if style.get("sample") is not None:
                index = style["sample"]
                if index not in class_codes_of:
                    assert samples is not None
                    image, sample_semantic, sample_panoptic = samples.load_reference(index)
                    class_codes_of[index] = style_by_class(generator, image, sample_semantic, sample_panoptic)
                options["class_codes"] = class_codes_of[index]
        image = synthesize(generator, torch.from_numpy(semantic), torch.from_numpy(panoptic), **options)
        return encode_png(image_to_uint8(image))

    return render


class SampleList:
    """Dataset samples the page can start from, chosen by their index in a list made at start.

    Args:
        dataset: a pansynth dataset (``build_dataset``): its ``samples[i].name`` name the samples,
            ``load_maps(i)`` (or ``dataset[i]``) reads the maps.
        size: (H, W) of the model; maps of another size are resized by nearest neighbour.
    """

    def __init__(self, dataset: Any, size: tuple[int, int]) -> None:
        self.dataset = dataset
        self.size = size
        records = getattr(dataset, "samples", None)
        self.names = [str(getattr(record, "name", index)) for index, record in enumerate(records or [])]
        if not self.names:
            self.names = [str(index) for index in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self.names):
            raise RequestError(f"sample {index} does not exist; there are {len(self.names)} (0..{len(self) - 1})", 404)
        try:
            if hasattr(self.dataset, "load_maps"):
                semantic, panoptic = self.dataset.load_maps(index)
            else:
                sample = self.dataset[index]
                semantic, panoptic = sample["semantic"], sample["panoptic"]
        except (OSError, ValueError) as error:
            raise RequestError(f"sample {self.names[index]}: unreadable ({error})", 422) from error
        semantic, panoptic = np.asarray(semantic, dtype=np.int64), np.asarray(panoptic, dtype=np.int64)
        if semantic.shape != self.size:
            semantic, panoptic = resize_nearest(semantic, self.size), resize_nearest(panoptic, self.size)
        return semantic, panoptic

    def load_reference(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ``index``'s photograph (Tensor[3, H, W] in [-1, 1]) and maps, at the model's size."""
        if not 0 <= index < len(self.names):
            raise RequestError(f"sample {index} does not exist; there are {len(self.names)} (0..{len(self) - 1})", 404)
        try:
            sample = self.dataset[index]
        except (OSError, ValueError) as error:
            raise RequestError(f"sample {self.names[index]}: unreadable ({error})", 422) from error
        semantic, panoptic = np.asarray(sample["semantic"], dtype=np.int64), np.asarray(sample["panoptic"], np.int64)
        image = torch.as_tensor(sample["image"]).float()
        if semantic.shape != self.size:
            semantic, panoptic = resize_nearest(semantic, self.size), resize_nearest(panoptic, self.size)
            image = resize_image(image, self.size)
        return image, torch.from_numpy(semantic), torch.from_numpy(panoptic)


class PainterApp:
    """The WSGI application of ``pansynth serve``.

    Args:
        generator: the loaded generator (``num_classes``, ``ignore_index``, ``output_size`` are read).
        classes: the palette (:func:`pansynth.serve.classes.build_class_table`).
        samples: dataset samples offered as starting maps, or None.
        max_upload_bytes: largest request body accepted (413 above).
        allowed_hosts: host names accepted in the Host header (against DNS rebinding); None accepts any.
        render: maps -> PNG bytes, run by the worker (default: :func:`make_renderer` of ``generator``).
        title: shown in the page header (e.g. the checkpoint path).

    Call :meth:`close` to stop the worker thread.
    """

    def __init__(
        self,
        generator: nn.Module,
        classes: ClassTable,
        samples: SampleList | None = None,
        *,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        allowed_hosts: Iterable[str] | None = _LOOPBACK_NAMES,
        render: Renderer | None = None,
        title: str = "",
    ) -> None:
        if not (math.isfinite(max_upload_bytes) and max_upload_bytes >= 1):
            raise ValueError(f"max_upload_bytes must be a finite number >= 1, got {max_upload_bytes}")
        self.num_classes = int(generator.num_classes)
        self.ignore_index = None if generator.ignore_index is None else int(generator.ignore_index)
        # The semantic value that marks unknown pixels in the PNGs the page sends and receives.
        self.unknown_value = unknown_value(self.num_classes, self.ignore_index)
        self.size: tuple[int, int] = tuple(int(v) for v in generator.output_size)  # type: ignore[assignment]
        if len(classes.names) != self.num_classes:
            raise ValueError(f"the class table has {len(classes.names)} classes but the model {self.num_classes}")
        self.classes = classes
        self.samples = samples
        self.max_upload_bytes = int(max_upload_bytes)
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.title = title
        self._static_files = {
            name: (resources.files("pansynth.serve").joinpath("static", name).read_bytes(), mimetype)
            for name, mimetype in _STATIC_FILES.items()
        }
        self._routes = Map(
            [
                Rule("/", endpoint="index", methods=["GET"]),
                Rule("/static/<name>", endpoint="static", methods=["GET"]),
                Rule("/api/info", endpoint="info", methods=["GET"]),
                Rule("/api/synthesize", endpoint="synthesize", methods=["POST"]),
                Rule("/api/maps", endpoint="maps", methods=["POST"]),
                Rule("/api/samples/<int:index>", endpoint="sample", methods=["GET"]),
            ]
        )
        self.style_dim = int(getattr(generator, "style_dim", 0) or 0)
        self.style_enabled = getattr(generator, "style_encoder", None) is not None
        renderer = render or make_renderer(generator, samples)
        self.worker = LatestWinsWorker(lambda job: _timed(renderer, *job))

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self.max_upload_bytes
        request.max_form_memory_size = self.max_upload_bytes
        request.max_form_parts = MAX_FORM_PARTS
        try:
            self._check_origin(request)
            endpoint, values = self._routes.bind_to_environ(environ).match()
            response = getattr(self, f"_endpoint_{endpoint}")(request, **values)
        except RequestError as error:
            response = json_error(str(error), error.status)
        except RequestEntityTooLarge:
            # Werkzeug's form parser says "too large" for too many parts as well: tell the two apart.
            too_large = self._body_too_large(request)
            self._drain(request)
            if too_large:
                response = json_error(
                    f"request body too large: the limit is {self.max_upload_bytes} bytes "
                    f"({self.max_upload_bytes / 2**20:.1f} MiB)",
                    413,
                )
            else:
                response = json_error(
                    f"the form has more than {MAX_FORM_PARTS} parts; send the PNG files 'semantic' and 'panoptic' "
                    "and the optional fields of the API only",
                    400,
                )
        except HTTPException as error:
            response = json_error(f"{error.name}: {request.method} {request.path}", error.code or 400)
            if error.code == 405 and hasattr(error, "valid_methods"):
                response.headers["Allow"] = ", ".join(error.valid_methods or [])
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def close(self) -> None:
        """Stop the synthesis worker (requests still waiting get 503)."""
        self.worker.close()

    # ------------------------------------------------------------------ checks
    def _check_origin(self, request: Request) -> None:
        """Refuse requests addressed to another host name (DNS rebinding) or posted by another site."""
        host = (request.host or "").lower()
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            raise RequestError(f"Host {host!r} is not served here; open the page at http://127.0.0.1:<port>/", 403)
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD") and origin is not None and urlsplit(origin).netloc.lower() != host:
            raise RequestError(f"requests from origin {origin!r} are refused: post from this server's page", 403)

    def _body_too_large(self, request: Request) -> bool:
        """After a RequestEntityTooLarge: was the body over the limit (else the form had too many parts)?"""
        if request.content_length is not None:
            return request.content_length > self.max_upload_bytes
        stream = request.__dict__.get("stream")  # werkzeug caches the body stream it read from there
        # A streamed (chunked) body is cut off where it passes the limit; a form of too many parts stops before.
        return not isinstance(stream, LimitedStream) or stream.is_exhausted

    def _drain(self, request: Request) -> None:
        """Read and drop what is left of a refused body, so that the client reads the answer, not a reset.

        Only what the form parser has not consumed already is waited for (a Content-Length body is
        read through werkzeug's own stream, which counts what was read; a chunked body through the
        server's de-chunking stream, which ends at the last chunk), at most ``_DRAIN_LIMIT_BYTES``,
        and a client that stops sending is given up after ``_DRAIN_TIMEOUT_S``: the connection is
        then closed (every answer of this server closes its connection).
        """
        environ = request.environ
        length = request.content_length
        if length is None:
            if "wsgi.input_terminated" not in environ:
                return  # no length and no chunked framing: the body has no end to read up to
            source: Any = environ["wsgi.input"]
            budget = _DRAIN_LIMIT_BYTES
        else:
            if length > _DRAIN_LIMIT_BYTES:
                return
            stream = request.__dict__.get("stream")
            source = stream if isinstance(stream, LimitedStream) else LimitedStream(environ["wsgi.input"], length)
            budget = length
        connection = environ.get("werkzeug.socket")
        if connection is not None:
            connection.settimeout(_DRAIN_TIMEOUT_S)
        try:
            while budget > 0:
                chunk = source.read(min(budget, 2**16))
                if not chunk:
                    break
                budget -= len(chunk)
        except (OSError, ValueError, HTTPException):
            pass  # the client went away, stalled or sent a broken chunk: the answer is sent all the same

    def _read_maps(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        """The checked (semantic, panoptic) maps of a multipart request with two PNG files."""
        if request.mimetype != "multipart/form-data":
            raise RequestError(
                f"expected a multipart/form-data body with the PNG files 'semantic' and 'panoptic', "
                f"got Content-Type {request.content_type or 'none'!r}",
                415,
            )
        if request.content_length is not None and request.content_length > self.max_upload_bytes:
            raise RequestEntityTooLarge()
        maps = {}
        for field in ("semantic", "panoptic"):
            upload = request.files.get(field)
            if upload is None:
                raise RequestError(f"missing the file field {field!r} (a PNG map); got fields {sorted(request.files)}")
            maps[field] = decode_map_png(upload.read(), field, self.size, field)
        check_classes(maps["semantic"], self.num_classes, self.unknown_value)
        check_ids(maps["panoptic"])
        return maps["semantic"], maps["panoptic"]

    # ------------------------------------------------------------------ endpoints
    def _endpoint_index(self, request: Request) -> Response:
        return self._static_response("index.html")

    def _endpoint_static(self, request: Request, name: str) -> Response:
        if name not in self._static_files or name == "index.html":
            raise RequestError(f"no static file {name!r}", 404)
        return self._static_response(name)

    def _static_response(self, name: str) -> Response:
        data, mimetype = self._static_files[name]
        response = Response(data, content_type=mimetype)
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _endpoint_info(self, request: Request) -> Response:
        background = self.classes.background
        return json_response(
            {
                "title": self.title,
                "height": self.size[0],
                "width": self.size[1],
                "num_classes": self.num_classes,
                "ignore_index": self.ignore_index,
                "unknown": {"value": self.unknown_value, "name": "unknown"},
                "classes": self.classes.to_json(),
                "palette_source": self.classes.palette_source,
                "names_source": self.classes.source,
                "notes": self.classes.notes,
                "background": background,
                "max_upload_bytes": self.max_upload_bytes,
                "samples": list(self.samples.names) if self.samples is not None else [],
                "style": {"enabled": self.style_enabled, "dim": self.style_dim},
            }
        )

    def _read_style(self, request: Request) -> dict[str, Any] | None:
        """The optional style fields of a synthesis request, checked: None when there are none."""
        given = [field for field in STYLE_FIELDS if field in request.form]
        if not given:
            return None
        if not self.style_enabled:
            raise RequestError(f"{given[0]}: this model has no styles (it was trained with model.style=none)")
        seed = _form_int(request.form.get("style_seed", "0"), "style_seed")
        restyle: dict[int, int] = {}
        if "style_restyle" in request.form:
            text = request.form["style_restyle"]
            try:
                value = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                raise RequestError(
                    f'style_restyle must be a JSON object {{"<segment id>": <int seed>}}, got {text[:80]!r}'
                )
            for key, item in value.items():
                restyle[_form_int(key, "style_restyle id")] = _form_int(item, f"style_restyle[{key!r}]")
        sample = None
        if "style_sample" in request.form:
            if self.samples is None:
                raise RequestError("style_sample: no dataset samples: start the server with --root DIR", 404)
            sample = _form_int(request.form["style_sample"], "style_sample")
            if not 0 <= sample < len(self.samples):
                raise RequestError(f"style_sample {sample} does not exist; there are {len(self.samples)}", 404)
        return {"seed": seed, "restyle": restyle, "sample": sample}

    def _endpoint_synthesize(self, request: Request) -> Response:
        maps = self._read_maps(request)
        style = self._read_style(request)
        job = self.worker.submit(maps if style is None else (*maps, style))
        try:
            png, milliseconds = job.wait(timeout=300)
        except Superseded as error:
            return json_error(str(error), 409)
        except (WorkerClosed, TimeoutError) as error:
            return json_error(str(error), 503)
        except Exception as error:  # a failure inside the generator: report it, keep serving
            print(f"pansynth serve: synthesis failed: {type(error).__name__}: {error}", file=sys.stderr)
            return json_error(f"synthesis failed: {type(error).__name__}: {error}", 500)
        response = Response(png, content_type="image/png")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Synthesis-Ms"] = f"{milliseconds:.0f}"
        return response

    def _endpoint_maps(self, request: Request) -> Response:
        semantic, panoptic = self._read_maps(request)
        return maps_response(semantic, panoptic)

    def _endpoint_sample(self, request: Request, index: int) -> Response:
        if self.samples is None:
            raise RequestError("no dataset samples: start the server with --root DIR", 404)
        semantic, panoptic = self.samples.load(index)
        # Unknown pixels (-1 in the library) go to the page as the unknown value with id 0, as it paints them.
        unknown = semantic == UNKNOWN
        semantic, panoptic = np.where(unknown, self.unknown_value, semantic), np.where(unknown, 0, panoptic)
        check_classes(semantic, self.num_classes, self.unknown_value, field=f"sample {self.samples.names[index]}")
        check_ids(panoptic, field=f"sample {self.samples.names[index]}")
        return maps_response(semantic, panoptic, name=self.samples.names[index])


def _form_int(value: Any, field: str) -> int:
    """An integer of a form field or JSON value (a seed, an id, an index), or a RequestError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(f"{field} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RequestError(f"{field} must be an integer, got {str(value)[:40]!r}") from None
    if not -_MAX_SEED - 1 <= number <= _MAX_SEED:
        raise RequestError(f"{field} must fit in 64 bits, got {number}")
    return number


def _timed(
    render: Renderer, semantic: np.ndarray, panoptic: np.ndarray, style: dict[str, Any] | None = None
) -> tuple[bytes, float]:
    start = time.perf_counter()
    png = render(semantic, panoptic) if style is None else render(semantic, panoptic, style=style)
    return png, (time.perf_counter() - start) * 1000


def _host_name(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` -> the bare name."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def json_response(content: Any, status: int = 200) -> Response:
    response = Response(json.dumps(content), status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def json_error(message: str, status: int) -> Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status)


def maps_response(semantic: np.ndarray, panoptic: np.ndarray, name: str | None = None) -> Response:
    """The maps as JSON: ``{"height", "width", "semantic": [row-major ints], "panoptic": [...], "name"}``."""
    height, width = semantic.shape
    return json_response(
        {
            "name": name,
            "height": height,
            "width": width,
            "semantic": semantic.reshape(-1).tolist(),
            "panoptic": panoptic.reshape(-1).tolist(),
        }
    )


class QuietRequestHandler(WSGIRequestHandler):
    """Logs refused and failed requests only: every stroke is a request, a log line each would drown the terminal."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 400 and int(code) != 409:
            super().log_request(code, size)


def allowed_hosts_for(host: str) -> tuple[str, ...] | None:
    """Host names the server answers to when bound to ``host``; None (any) for a wildcard address."""
    if host in _WILDCARD_HOSTS:
        return None
    return (*_LOOPBACK_NAMES, host.strip("[]").lower())
