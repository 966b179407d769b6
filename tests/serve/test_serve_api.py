"""The HTTP API of `pansynth serve`, called directly on a server listening on a free local port."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from serve_testing import (
    HEIGHT,
    IGNORE_INDEX,
    NUM_CLASSES,
    WIDTH,
    build_tiny_generator,
    decode_png,
    expected_image,
    make_app,
    metadata_of,
    png_bytes,
    post_maps,
    request,
    running,
    scene_maps,
)

from pansynth.serve.app import PainterApp, SampleList, make_renderer
from pansynth.serve.classes import build_class_table
from pansynth.serve.maps import MAX_SEGMENT_ID, RequestError, check_ids, resize_nearest

UPLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(generator, export_dir):
    app = make_app(generator, export_dir, max_upload_bytes=UPLOAD_LIMIT)
    with running(app) as base:
        yield base, app
    app.close()


def _valid_files(seed: int = 0) -> dict[str, bytes]:
    semantic, panoptic = scene_maps(seed)
    return {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic, "16")}


def _assert_still_serving(base: str, generator) -> None:
    status, headers, body = post_maps(base, "/api/synthesize", _valid_files(1))
    assert status == 200 and headers["Content-Type"] == "image/png"
    np.testing.assert_array_equal(decode_png(body), expected_image(generator, *scene_maps(1)))


def _error(body: bytes) -> str:
    content = json.loads(body)
    assert set(content) == {"error"}
    return content["error"]


@pytest.mark.parametrize("panoptic_format", ["16", "rgb_ids"])
def test_synthesize_equals_library_bit_for_bit(server, generator, panoptic_format):
    base, _ = server
    semantic, panoptic = scene_maps(0)
    if panoptic_format == "rgb_ids":
        panoptic = panoptic * 97 + 70000  # ids beyond 16 bits; only equality of ids matters to the model
    files = {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic, panoptic_format)}
    status, headers, body = post_maps(base, "/api/synthesize", files)
    assert status == 200, body
    assert headers["Content-Type"] == "image/png"
    image = decode_png(body)
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected_image(generator, semantic, panoptic))


def test_different_maps_give_different_images(server):
    base, _ = server
    first = decode_png(post_maps(base, "/api/synthesize", _valid_files(0))[2])
    semantic, panoptic = scene_maps(0)
    panoptic[10:25, 19:30] = 2001  # merge the two touching cars into one instance
    merged = decode_png(
        post_maps(base, "/api/synthesize", {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic, "16")})[2]
    )
    assert not np.array_equal(first, merged)


def _png_of_size(height: int, width: int) -> bytes:
    return png_bytes(np.zeros((height, width), dtype=np.int64))


BAD_REQUESTS = {
    # name: (files or raw body, content type, expected status, words in the error)
    "wrong size": (
        {"semantic": _png_of_size(HEIGHT * 2, WIDTH), "panoptic": _png_of_size(HEIGHT * 2, WIDTH)},
        None,
        422,
        ["semantic", f"{HEIGHT * 2}x{WIDTH}", f"{HEIGHT}x{WIDTH}"],
    ),
    "height and width swapped": (
        {"semantic": _png_of_size(WIDTH, HEIGHT), "panoptic": _png_of_size(WIDTH, HEIGHT)},
        None,
        422,
        [f"{WIDTH}x{HEIGHT}", f"{HEIGHT}x{WIDTH}"],
    ),
    "class out of range": (
        {
            "semantic": png_bytes(np.where(scene_maps()[0] == 4, 7, scene_maps()[0])),
            "panoptic": png_bytes(scene_maps()[1], "16"),
        },
        None,
        422,
        ["class 7", f"0..{NUM_CLASSES - 1}", str(IGNORE_INDEX)],
    ),
    "class equal to num_classes": (
        {"semantic": png_bytes(np.full((HEIGHT, WIDTH), NUM_CLASSES)), "panoptic": _png_of_size(HEIGHT, WIDTH)},
        None,
        422,
        [f"class {NUM_CLASSES}"],
    ),
    "semantic not a PNG": (
        {"semantic": b"GIF89a not a png at all", "panoptic": _png_of_size(HEIGHT, WIDTH)},
        None,
        400,
        ["semantic", "not a PNG"],
    ),
    "truncated PNG": (
        {"semantic": png_bytes(scene_maps()[0])[:60], "panoptic": _png_of_size(HEIGHT, WIDTH)},
        None,
        400,
        ["semantic", "PNG"],
    ),
    "RGB semantic map": (
        {"semantic": png_bytes(scene_maps()[1], "rgb_ids"), "panoptic": _png_of_size(HEIGHT, WIDTH)},
        None,
        422,
        ["semantic", "single-channel", "RGB"],
    ),
    "missing panoptic field": (
        {"semantic": _png_of_size(HEIGHT, WIDTH)},
        None,
        400,
        ["panoptic"],
    ),
    "JSON body": (b'{"semantic": []}', "application/json", 415, ["multipart/form-data", "application/json"]),
    "oversized upload": (
        {"semantic": b"\x89PNG\r\n\x1a\n" + bytes(UPLOAD_LIMIT), "panoptic": _png_of_size(HEIGHT, WIDTH)},
        None,
        413,
        ["too large", str(UPLOAD_LIMIT)],
    ),
}


@pytest.mark.parametrize("endpoint", ["/api/synthesize", "/api/maps"])
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_refused_with_its_error_and_the_server_still_serves(server, generator, endpoint, name):
    base, _ = server
    payload, content_type, expected_status, words = BAD_REQUESTS[name]
    if isinstance(payload, dict):
        status, headers, body = post_maps(base, endpoint, payload)
    else:
        status, headers, body = request(f"{base}{endpoint}", payload, {"Content-Type": content_type}, "POST")
    assert status == expected_status, body
    assert headers["Content-Type"] == "application/json"
    message = _error(body)
    for word in words:
        assert word in message, (word, message)
    _assert_still_serving(base, generator)


def test_maps_endpoint_returns_the_checked_maps(server):
    base, _ = server
    semantic, panoptic = scene_maps(2)
    status, _, body = post_maps(
        base, "/api/maps", {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic, "rgb_ids")}
    )
    assert status == 200, body
    content = json.loads(body)
    assert (content["height"], content["width"]) == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(np.array(content["semantic"]).reshape(HEIGHT, WIDTH), semantic)
    np.testing.assert_array_equal(np.array(content["panoptic"]).reshape(HEIGHT, WIDTH), panoptic)


def test_info_describes_model_and_palette(server):
    base, _ = server
    status, _, body = request(f"{base}/api/info")
    assert status == 200
    info = json.loads(body)
    assert (info["height"], info["width"], info["num_classes"]) == (HEIGHT, WIDTH, NUM_CLASSES)
    assert info["ignore_index"] == IGNORE_INDEX and info["background"] == IGNORE_INDEX
    assert [c["name"] for c in info["classes"]] == ["sky", "road", "car", "person", "tree", "unlabeled"]
    assert [c["index"] for c in info["classes"] if c["thing"]] == [2, 3]
    assert info["names_source"] == "checkpoint"
    colors = [tuple(c["color"]) for c in info["classes"]]
    assert len(set(colors)) == len(colors)
    assert info["max_upload_bytes"] == UPLOAD_LIMIT and info["samples"] == []


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/static/painter.js", "GET", 200),
        ("/static/painter.css", "GET", 200),
        ("/", "GET", 200),
        ("/static/../conftest.py", "GET", 404),
        ("/static/%2e%2e%2fapp.py", "GET", 404),
        ("/static/app.py", "GET", 404),
        ("/api/samples/0", "GET", 404),  # no --root
        ("/api/synthesize", "GET", 405),
        ("/api/info", "POST", 405),
        ("/nothing", "GET", 404),
    ],
)
def test_routes(server, path, method, status):
    base, _ = server
    got, headers, body = request(f"{base}{path}", b"" if method == "POST" else None, method=method)
    assert got == status, body
    if status != 200:
        assert headers["Content-Type"] == "application/json" and _error(body)
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_foreign_host_and_origin_are_refused(server):
    base, _ = server
    status, _, body = request(f"{base}/api/info", headers={"Host": "attacker.example:80"})
    assert status == 403 and "attacker.example" in _error(body)
    status, _, body = post_maps(base, "/api/synthesize", _valid_files(), {"Origin": "http://attacker.example"})
    assert status == 403 and "origin" in _error(body)
    status, _, _ = post_maps(base, "/api/synthesize", _valid_files(), {"Origin": base})
    assert status == 200


def test_check_ids_range():
    check_ids(np.array([[0, MAX_SEGMENT_ID]]))
    for bad in (-1, MAX_SEGMENT_ID + 1):
        with pytest.raises(RequestError, match=f"segment id {bad} at pixel \\(y=0, x=1\\)"):
            check_ids(np.array([[0, bad]]))


# ---------------------------------------------------------------------- latest map wins
def test_latest_map_wins_and_a_burst_costs_two_syntheses(generator, export_dir):
    """Block the worker on map A, send B, C, D: B and C are superseded, only A and D are synthesized."""
    render = make_renderer(generator)
    release = threading.Event()
    rendered: list[np.ndarray] = []

    def blocking_render(semantic, panoptic):
        rendered.append(semantic.copy())
        if len(rendered) == 1:
            assert release.wait(30)
        return render(semantic, panoptic)

    app = make_app(generator, export_dir, render=blocking_render)
    maps = []
    for seed in range(4):
        semantic, panoptic = scene_maps(seed)
        semantic[0, 0] = seed  # tell the maps apart
        maps.append((semantic, panoptic))
    results: dict[int, tuple[int, bytes]] = {}

    def send(index: int, base: str) -> None:
        semantic, panoptic = maps[index]
        status, _, body = post_maps(
            base, "/api/synthesize", {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic, "16")}
        )
        results[index] = (status, body)

    with running(app) as base:
        threads = []
        for index in range(4):
            thread = threading.Thread(target=send, args=(index, base))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 30
            # the next map is sent only once this one is in the worker's box (or running)
            while app.worker.submitted < index + 1 or (index == 0 and not rendered):
                assert time.monotonic() < deadline
                time.sleep(0.005)
        release.set()
        for thread in threads:
            thread.join(30)
    app.close()

    assert [results[i][0] for i in range(4)] == [200, 409, 409, 200]
    assert "superseded" in _error(results[1][1]) and "superseded" in _error(results[2][1])
    assert len(rendered) == 2
    np.testing.assert_array_equal(rendered[0], maps[0][0])
    np.testing.assert_array_equal(rendered[1], maps[3][0])
    np.testing.assert_array_equal(decode_png(results[3][1]), expected_image(generator, *maps[3]))
    assert (app.worker.submitted, app.worker.completed, app.worker.superseded) == (4, 2, 2)


def test_a_failing_synthesis_is_reported_and_the_next_one_served(generator, export_dir):
    render = make_renderer(generator)
    calls = []

    def flaky_render(semantic, panoptic):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return render(semantic, panoptic)

    app = make_app(generator, export_dir, render=flaky_render)
    with running(app) as base:
        status, _, body = post_maps(base, "/api/synthesize", _valid_files())
        assert status == 500 and "out of memory (simulated)" in _error(body)
        _assert_still_serving(base, generator)
    app.close()


# ---------------------------------------------------------------------- dataset samples
class _TinyDataset:
    """Two samples at twice the model's size, as a dataset reader exposes them."""

    num_classes = NUM_CLASSES
    class_names = ["a", "b", "c", "d", "e"]
    thing_classes = [4]

    class _Record:
        def __init__(self, name: str) -> None:
            self.name = name

    def __init__(self) -> None:
        self.samples = [self._Record("first"), self._Record("second")]
        rng = np.random.default_rng(3)
        self.maps = [
            (rng.integers(0, NUM_CLASSES, (2 * HEIGHT, 2 * WIDTH)), rng.integers(0, 50000, (2 * HEIGHT, 2 * WIDTH)))
            for _ in self.samples
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def load_maps(self, index: int):
        return self.maps[index]


def test_dataset_samples_are_chosen_by_index_and_resized(generator, tmp_path):
    generator_export = tmp_path / "export"
    build_tiny_generator().save_pretrained(generator_export)  # no class names in this export: the dataset's are used
    dataset = _TinyDataset()
    classes = build_class_table(NUM_CLASSES, IGNORE_INDEX, metadata_of(generator_export), dataset)
    assert classes.source == "dataset" and classes.names == dataset.class_names and classes.things == [4]
    app = PainterApp(generator, classes, SampleList(dataset, (HEIGHT, WIDTH)))
    with running(app) as base:
        info = json.loads(request(f"{base}/api/info")[2])
        assert info["samples"] == ["first", "second"]
        status, _, body = request(f"{base}/api/samples/1")
        assert status == 200
        content = json.loads(body)
        semantic, panoptic = dataset.maps[1]
        assert content["name"] == "second"
        # nearest neighbour at scale 1/2 keeps every other row and column
        np.testing.assert_array_equal(np.array(content["semantic"]).reshape(HEIGHT, WIDTH), semantic[::2, ::2])
        np.testing.assert_array_equal(np.array(content["panoptic"]).reshape(HEIGHT, WIDTH), panoptic[::2, ::2])
        for bad in ("2", "-1", "..%2f..%2fetc"):
            status, _, body = request(f"{base}/api/samples/{bad}")
            assert status == 404, bad
            assert _error(body)
    app.close()


@pytest.mark.parametrize(("source", "target"), [((4, 6), (4, 6)), ((4, 6), (8, 3)), ((5, 5), (2, 7))])
def test_resize_nearest_matches_the_index_formula(source, target):
    array = np.arange(source[0] * source[1]).reshape(source)
    resized = resize_nearest(array, target)
    expected = np.empty(target, dtype=array.dtype)
    for i in range(target[0]):
        for j in range(target[1]):
            expected[i, j] = array[i * source[0] // target[0], j * source[1] // target[1]]
    np.testing.assert_array_equal(resized, expected)
