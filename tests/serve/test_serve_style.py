"""The painter's style API: /api/info "style", and the optional style fields of POST /api/synthesize."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from serve_testing import (
    CLASS_NAMES,
    HEIGHT,
    IGNORE_INDEX,
    NUM_CLASSES,
    THING_CLASSES,
    WIDTH,
    decode_png,
    png_bytes,
    request,
    running,
    scene_maps,
    write_folder_dataset,
)

from pansynth.data import build_dataset
from pansynth.inference import style_by_class, synthesize
from pansynth.models import Generator
from pansynth.serve.app import PainterApp, SampleList
from pansynth.serve.classes import build_class_table
from pansynth.viz import image_to_uint8


def _post(base: str, fields: dict[str, str], seed: int = 0):
    semantic, panoptic = scene_maps(seed)
    boundary = uuid.uuid4().hex
    parts = []
    for name, content in (("semantic", png_bytes(semantic)), ("panoptic", png_bytes(panoptic, "16"))):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return request(
        f"{base}/api/synthesize", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, "POST"
    )


def _expected(generator, **style) -> np.ndarray:
    semantic, panoptic = (torch.from_numpy(a) for a in scene_maps(0))
    return image_to_uint8(synthesize(generator, semantic, panoptic, **style))


@pytest.fixture(scope="module")
def style_server(tmp_path_factory):
    torch.manual_seed(0)
    generator = Generator(
        NUM_CLASSES, size=(HEIGHT, WIDTH), ignore_index=IGNORE_INDEX, ngf=2, spade_hidden=8, style="instance"
    ).eval()
    root = write_folder_dataset(
        tmp_path_factory.mktemp("data"), CLASS_NAMES, THING_CLASSES, ["a", "b"], (HEIGHT, WIDTH)
    )
    samples = SampleList(build_dataset("folder", root), (HEIGHT, WIDTH))
    app = PainterApp(generator, build_class_table(NUM_CLASSES, IGNORE_INDEX, {}), samples)
    with running(app) as base:
        yield base, generator, samples
    app.close()


def test_info_tells_the_style_settings(style_server, generator, export_dir):
    base, style_generator, _ = style_server
    _, _, body = request(f"{base}/api/info")
    assert json.loads(body)["style"] == {"enabled": True, "dim": style_generator.style_dim}
    plain = PainterApp(generator, build_class_table(NUM_CLASSES, IGNORE_INDEX, {}))
    try:
        with running(plain) as plain_base:
            _, _, body = request(f"{plain_base}/api/info")
            assert json.loads(body)["style"] == {"enabled": False, "dim": 0}
            status, _, body = _post(plain_base, {"style_seed": "3"})
            assert status == 400 and "no styles" in json.loads(body)["error"]
    finally:
        plain.close()


def test_seed_restyle_and_sample_fields_are_the_library_calls(style_server):
    base, generator, samples = style_server
    status, _, default = _post(base, {})
    assert status == 200
    np.testing.assert_array_equal(decode_png(default), _expected(generator))  # no fields: seed 0
    _, _, seeded = _post(base, {"style_seed": "3"})
    np.testing.assert_array_equal(decode_png(seeded), _expected(generator, seed=3))
    assert not np.array_equal(decode_png(seeded), decode_png(default))
    _, _, restyled = _post(base, {"style_seed": "3", "style_restyle": '{"2001": 9}'})
    np.testing.assert_array_equal(decode_png(restyled), _expected(generator, seed=3, restyle={2001: 9}))
    assert not np.array_equal(decode_png(restyled), decode_png(seeded))
    status, _, by_sample = _post(base, {"style_seed": "3", "style_sample": "1"})
    assert status == 200
    image, semantic, panoptic = samples.load_reference(1)
    class_codes = style_by_class(generator, image, semantic, panoptic)
    np.testing.assert_array_equal(decode_png(by_sample), _expected(generator, seed=3, class_codes=class_codes))


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"style_seed": "abc"}, 400, "style_seed must be an integer"),
        ({"style_restyle": "[1, 2]"}, 400, "style_restyle must be a JSON object"),
        ({"style_restyle": '{"x": 1}'}, 400, "style_restyle id must be an integer"),
        ({"style_restyle": '{"5": 1.5}'}, 400, "must be an integer"),
        ({"style_sample": "7"}, 404, "style_sample 7 does not exist"),
        ({"style_seed": str(2**64)}, 400, "64 bits"),
    ],
)
def test_bad_style_fields_are_refused(style_server, fields, status, message):
    base, _, _ = style_server
    answer, _, body = _post(base, fields)
    assert answer == status
    assert message in json.loads(body)["error"]
