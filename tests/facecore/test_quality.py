"""Quality values on real faces: blur follows known blur, illumination follows brightness,
completeness follows whether the face runs over the image edge."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from facecore.pipeline import quality
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image

from tests.conftest import SHARED_DATA

LFW = SHARED_DATA / "lfw" / "images"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return [decode_image(p.read_bytes()) for p in sorted(LFW.glob("*/*.jpg"))[::150]]


def _quality(engine: Engine, img: np.ndarray) -> dict[str, float]:
    found = engine.detect(img, fields=("quality",))
    assert len(found) == 1 and found[0].quality is not None
    return found[0].quality


def test_blur_rises_with_gaussian_blur(engine: Engine, faces: list[np.ndarray]) -> None:
    sharp, soft, very = [], [], []
    for img in faces:
        sharp.append(_quality(engine, img)["blur"])
        soft.append(_quality(engine, cv2.GaussianBlur(img, (0, 0), 1.5))["blur"])
        very.append(_quality(engine, cv2.GaussianBlur(img, (0, 0), 3.0))["blur"])
    s, m, v = np.array(sharp), np.array(soft), np.array(very)
    assert np.all((s >= 0) & (v <= 1))
    assert np.median(s) < 0.3, "unblurred LFW faces pass the HIGH threshold (0.2) mostly"
    assert np.median(v) > 0.6, "a 3 px blur of a ~110 px face fails NORMAL (0.6) mostly"
    assert np.mean(m > s) >= 0.9 and np.mean(v > m) >= 0.9


def test_illumination_follows_brightness(engine: Engine, faces: list[np.ndarray]) -> None:
    for img in faces[:8]:
        bright = _quality(engine, img)["illumination"]
        dark = _quality(engine, (img.astype(np.float32) * 0.3).astype(np.uint8))["illumination"]
        assert 0 <= dark < bright <= 255
        assert dark == pytest.approx(bright * 0.3, rel=0.1)


def test_completeness(engine: Engine, faces: list[np.ndarray]) -> None:
    for img in faces[:6]:
        assert _quality(engine, img)["completeness"] == 1
        x1, _, x2, _ = engine.detect(img)[0].box
        # Cut the image through the face, left of its centre: the face runs over the left edge.
        cut = np.ascontiguousarray(img[:, int((x1 + x2) / 2 - (x2 - x1) * 0.2) :])
        assert _quality(engine, cut)["completeness"] == 0


def test_completeness_of_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [-1, 0, 10, 10], [5, 5, 21, 10], [5, 5, 20, 31]])
    assert quality.completeness(boxes, 20, 30).tolist() == [1, 0, 0, 0]
