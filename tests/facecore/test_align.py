"""facecore.pipeline.align against dlib itself: the 5-point shape predictor and the face chips; and chips
cut from MTCNN's points (no dlib counterpart: checked against the dlib-geometry chip).

dlib's Python API returns its landmarks rounded to integer pixels, so "the same landmarks" means:
our unrounded points, rounded half up as dlib does, equal dlib's exactly (and so lie within half a
pixel of them). A sub-pixel comparison is not possible through dlib's API. Chips are compared
pixel for pixel with dlib.get_face_chip given the same (dlib's) landmarks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
from facecore.convert import dlib_shape
from facecore.convert.sources import member_path
from facecore.pipeline.align import (
    MTCNN_TEMPLATE5,
    Shape5Predictor,
    boxes_to_dlib_rects,
    chip_transform,
    chip_transform_from_mtcnn,
    extract_chips,
    pyramid_level,
    similarity_from_points,
)
from facecore.pipeline.detect import MtcnnDetector
from facecore.pipeline.embed import Recognizer
from facecore.runtime.backend import OnnxRuntimeBackend

from tests.conftest import MODEL_SOURCES, MODELS_DIR, SHARED_DATA

LFW = SHARED_DATA / "lfw" / "images"


def _box(rect: dlib.rectangle) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64)


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


@pytest.fixture(scope="module")
def predictor() -> Shape5Predictor:
    return Shape5Predictor(MODELS_DIR / dlib_shape.OUT_FILE)


@pytest.fixture(scope="module")
def dlib_sp() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(member_path("dlib_shape5", MODEL_SOURCES)))


@pytest.fixture(scope="module")
def lfw_faces(dlib_sp: dlib.shape_predictor) -> list[tuple[Path, dlib.rectangle]]:
    """60 LFW faces (every 50th image) with dlib HOG boxes (upsample 1), as dlib's examples."""
    detector = dlib.get_frontal_face_detector()
    faces = []
    for path in sorted(LFW.glob("*/*.jpg"))[::50]:
        rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        faces += [(path, rect) for rect in detector(rgb, 1)]
        if len(faces) >= 60:
            break
    assert len(faces) >= 60
    return faces


def test_shape5_matches_dlib(
    predictor: Shape5Predictor,
    dlib_sp: dlib.shape_predictor,
    lfw_faces: list[tuple[Path, dlib.rectangle]],
) -> None:
    for path, rect in lfw_faces:
        bgr = cv2.imread(str(path))
        ref = _points(dlib_sp(np.ascontiguousarray(bgr[:, :, ::-1]), rect))
        ours = predictor.predict(bgr, _box(rect)[None])[0]
        assert ours.shape == (5, 2) and ours.dtype == np.float32
        np.testing.assert_array_equal(np.floor(ours + 0.5), ref, err_msg=str(path))


def test_shape5_box_past_the_image_edge(
    predictor: Shape5Predictor, dlib_sp: dlib.shape_predictor
) -> None:
    """Feature pixels outside the image read 0 in dlib; a box hanging off a corner exercises it."""
    bgr = cv2.imread(str(min(LFW.glob("*/*.jpg"))))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    for rect in (dlib.rectangle(-40, -30, 120, 130), dlib.rectangle(150, 140, 290, 280)):
        ref = _points(dlib_sp(rgb, rect))
        ours = predictor.predict(bgr, _box(rect)[None])[0]
        np.testing.assert_array_equal(np.floor(ours + 0.5), ref)


def test_shape5_batches_faces(predictor: Shape5Predictor) -> None:
    bgr = cv2.imread(str(sorted(LFW.glob("*/*.jpg"))[5]))
    boxes = np.array([[70, 70, 180, 180], [60.4, 80.6, 190.2, 200.9], [0, 0, 250, 250]])
    together = predictor.predict(bgr, boxes)
    alone = np.concatenate([predictor.predict(bgr, b[None]) for b in boxes])
    np.testing.assert_array_equal(together, alone)
    assert predictor.predict(bgr, np.zeros((0, 4))).shape == (0, 5, 2)


def test_shape5_rejects_bad_input(predictor: Shape5Predictor) -> None:
    with pytest.raises(TypeError):
        predictor.predict(np.zeros((10, 10, 3), np.float32), np.zeros((1, 4)))
    with pytest.raises(ValueError):
        predictor.predict(np.zeros((10, 10, 3), np.uint8), np.array([[0, 0, np.nan, 5]]))


def test_box_to_dlib_rect_round_trip() -> None:
    rect = dlib.rectangle(12, -3, 97, 88)
    np.testing.assert_array_equal(boxes_to_dlib_rects(_box(rect)[None]), [[12, -3, 97, 88]])


def test_chips_match_dlib(
    dlib_sp: dlib.shape_predictor, lfw_faces: list[tuple[Path, dlib.rectangle]]
) -> None:
    """Bit-exact on these faces; bound: mean abs difference < 0.01 grey levels per chip."""
    for path, rect in lfw_faces[:30]:
        bgr = cv2.imread(str(path))
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        shape = dlib_sp(rgb, rect)
        ref = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        tf = chip_transform(_points(shape), 150, 0.25)
        assert pyramid_level(tf, 150) == -1
        ours = extract_chips(bgr, [tf], 150)[0]
        assert ours.shape == (150, 150, 3) and ours.dtype == np.uint8
        assert np.abs(ours.astype(int) - ref).mean() < 0.01, path


def test_chips_of_large_faces_use_dlibs_pyramid(
    dlib_sp: dlib.shape_predictor, lfw_faces: list[tuple[Path, dlib.rectangle]]
) -> None:
    """A face several times the chip's scale is sampled from dlib's 2x pyramid: same chip."""
    for (path, rect), factor in zip(lfw_faces[:3], (3.0, 5.0, 8.0)):
        small = cv2.imread(str(path))
        bgr = cv2.resize(small, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        big = dlib.rectangle(
            *(int(v * factor) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
        )
        shape = dlib_sp(rgb, big)
        tf = chip_transform(_points(shape), 150, 0.25)
        assert pyramid_level(tf, 150) >= 0
        ref = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        ours = extract_chips(bgr, tf, 150)[0]
        assert np.abs(ours.astype(int) - ref).mean() < 0.01, (path, factor)


def test_chip_puts_landmarks_on_the_template() -> None:
    pts = np.array([[160.0, 110], [140, 112], [95, 108], [115, 111], [128, 150]])
    tf = chip_transform(pts, 150, 0.25)
    in_chip = pts @ tf[:, :2].T + tf[:, 2]
    template = (
        (0.25 + np.array([[0.86, 0.21], [0.65, 0.23], [0.12, 0.21], [0.33, 0.23], [0.49, 0.63]]))
        / 1.5
        * 150
    )
    assert np.abs(in_chip - template).max() < 6


def test_similarity_from_points_recovers_a_similarity(rng: np.random.Generator) -> None:
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    tf = similarity_from_points(src, dst)
    np.testing.assert_allclose(tf, np.concatenate([rot, shift[:, None]], axis=1), atol=1e-9)
    # a mirror image is fitted by a rotation, never a reflection
    mirrored = similarity_from_points(src, dst * np.array([-1.0, 1.0]))
    assert np.linalg.det(mirrored[:, :2]) > 0
    with pytest.raises(ValueError):
        similarity_from_points(src, dst[:3])


def test_mtcnn_transform_puts_points_on_its_template(rng: np.random.Generator) -> None:
    size, pad = 150, 0.25
    chip_pts = (pad + MTCNN_TEMPLATE5) / (1 + 2 * pad) * size
    for _ in range(5):
        angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.4, 3.0)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        img_pts = chip_pts @ rot.T + rng.uniform(0, 500, 2)
        tf = chip_transform_from_mtcnn(img_pts, size, pad)
        back = img_pts @ tf[:, :2].T + tf[:, 2]
        # dlib's chip geometry samples at (size*scale - 1) / (size - 1): under a pixel here
        assert np.abs(back - chip_pts).max() < 1.0


def test_mtcnn_chips_embed_like_dlib_chips(
    predictor: Shape5Predictor, lfw_faces: list[tuple[Path, dlib.rectangle]]
) -> None:
    """A chip cut from MTCNN's points is close to the dlib-geometry chip of the same face: their
    embeddings agree (on LFW: median cosine 0.996, 5th percentile 0.987)."""
    backend = OnnxRuntimeBackend(MODELS_DIR)
    detector = MtcnnDetector(backend)
    rec = Recognizer(backend)
    for path, rect in lfw_faces[:8]:
        bgr = cv2.imread(str(path))
        found = detector.detect(bgr)
        assert len(found) >= 1
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        k = int(np.argmin(np.linalg.norm(centres - _box(rect).reshape(2, 2).mean(0), axis=1)))
        dlib_geom = chip_transform(predictor.predict(bgr, _box(rect)[None])[0])
        ours = chip_transform_from_mtcnn(found.points[k])
        e = rec.embed(extract_chips(bgr, [dlib_geom, ours]))
        assert float(e[0] @ e[1]) > 0.95, path
