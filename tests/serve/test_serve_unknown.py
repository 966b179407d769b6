"""Unknown pixels through the painter API: /api/info names the value, /api/synthesize accepts it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from serve_testing import (
    HEIGHT,
    NUM_CLASSES,
    WIDTH,
    decode_png,
    make_app,
    png_bytes,
    post_maps,
    request,
    running,
    scene_maps,
)

from pansynth.data import Folder
from pansynth.models import Generator
from pansynth.serve.app import PainterApp, SampleList
from pansynth.serve.classes import build_class_table


@pytest.fixture(scope="module")
def no_channel_server():
    """A model without an ignore channel: its unknown value is 255 (classes fit in 0..254)."""
    torch.manual_seed(3)
    generator = Generator(NUM_CLASSES, size=(HEIGHT, WIDTH), ngf=4, spade_hidden=16).eval()
    app = PainterApp(generator, build_class_table(NUM_CLASSES, None))
    with running(app) as base:
        yield base, generator
    app.close()


def _unknown_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    semantic, panoptic = scene_maps(0)
    semantic, panoptic = np.where(semantic == 255, 0, semantic), np.where(semantic == 255, 0, panoptic)
    unknown = np.zeros_like(semantic, dtype=bool)
    unknown[8:20, 20:44] = True  # across the sky (id 0), both cars and the person
    return semantic, panoptic, unknown


def _uint8(image: torch.Tensor) -> np.ndarray:
    return ((image.double().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_info_of_a_model_with_an_ignore_channel(generator, export_dir):
    app = make_app(generator, export_dir)
    with running(app) as base:
        info = json.loads(request(base + "/api/info")[2])
    app.close()
    assert info["unknown"] == {"value": 255, "name": "unknown"} and info["ignore_index"] == 255


def test_unknown_pixels_are_one_segment_without_class_whatever_their_id(no_channel_server):
    base, generator = no_channel_server
    status, _, body = request(base + "/api/info")
    assert status == 200 and json.loads(body)["unknown"] == {"value": 255, "name": "unknown"}
    semantic, panoptic, unknown = _unknown_maps()
    # The literal in-library input: class and id -1 on the unknown pixels.
    with torch.no_grad():
        expected = generator(
            torch.from_numpy(np.where(unknown, -1, semantic))[None],
            torch.from_numpy(np.where(unknown, -1, panoptic))[None],
        )[0]
    images = []
    # The painter sends id 0 (also the sky's id here); any other id must give the same image.
    for unknown_id in (0, 4242):
        files = {
            "semantic": png_bytes(np.where(unknown, 255, semantic)),
            "panoptic": png_bytes(np.where(unknown, unknown_id, panoptic), "16"),
        }
        status, headers, body = post_maps(base, "/api/synthesize", files)
        assert status == 200 and headers["Content-Type"] == "image/png", body[:200]
        images.append(decode_png(body))
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], _uint8(expected))
    # Painting the region as sky instead changes the image: the unknown value is not a class in disguise.
    files = {"semantic": png_bytes(np.where(unknown, 0, semantic)), "panoptic": png_bytes(panoptic, "16")}
    assert not np.array_equal(decode_png(post_maps(base, "/api/synthesize", files)[2]), images[0])


def test_a_value_neither_class_nor_unknown_is_refused(no_channel_server):
    base, _ = no_channel_server
    semantic, panoptic, _ = _unknown_maps()
    semantic[3, 4] = 7
    status, _, body = post_maps(
        base, "/api/synthesize", {"semantic": png_bytes(semantic), "panoptic": png_bytes(panoptic, "16")}
    )
    assert status == 422
    assert json.loads(body)["error"] == (
        "semantic: class 7 at pixel (y=3, x=4) is not one of this model's classes (0..4 or the unknown value 255)"
    )


def test_a_dataset_sample_comes_to_the_page_with_the_unknown_value_and_id_0(tmp_path):
    root = tmp_path / "data"
    for kind in ("images", "semantic", "panoptic"):
        (root / kind).mkdir(parents=True)
    classes = [{"name": f"c{i}", "isthing": i in (2, 3)} for i in range(NUM_CLASSES)]
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": None, "unknown": 200}))
    semantic, panoptic, unknown = _unknown_maps()
    Image.fromarray(np.where(unknown, 200, semantic).astype(np.uint8)).save(root / "semantic" / "a.png")
    Image.fromarray(panoptic.astype(np.uint16)).save(root / "panoptic" / "a.png")
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(root / "images" / "a.png")
    torch.manual_seed(3)
    generator = Generator(NUM_CLASSES, size=(HEIGHT, WIDTH), ngf=4, spade_hidden=16).eval()
    app = PainterApp(generator, build_class_table(NUM_CLASSES, None), SampleList(Folder(root), (HEIGHT, WIDTH)))
    with running(app) as base:
        status, _, body = request(base + "/api/samples/0")
    app.close()
    assert status == 200
    maps = json.loads(body)
    got_semantic = np.array(maps["semantic"]).reshape(HEIGHT, WIDTH)
    got_panoptic = np.array(maps["panoptic"]).reshape(HEIGHT, WIDTH)
    # The model's unknown value (255), not the dataset's file value (200), and the painter's id 0.
    np.testing.assert_array_equal(got_semantic, np.where(unknown, 255, semantic))
    np.testing.assert_array_equal(got_panoptic, np.where(unknown, 0, panoptic))
