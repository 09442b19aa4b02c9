"""FaceMesh on real LFW faces: the 72/4-point layouts, eye and mouth opening, head pose.

Faces come from our MTCNN detector (box + 5 points), as in the pipeline. References that share
nothing with the mesh: dlib's 5-point shape predictor (eye corners, nose base) on dlib's own HOG
boxes; mirrored and rotated copies of the same photo for the pose conventions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import pytest
from facecore.convert.sources import member_path
from facecore.pipeline.detect import MtcnnDetector
from facecore.pipeline.landmarks import (
    MESH72,
    FaceMesh,
    Mesh,
    eye_open,
    landmark4,
    landmarks72,
    mouth_open_ratio,
)
from facecore.pipeline.pose import face_frame, head_pose, rotation
from facecore.runtime.backend import OnnxRuntimeBackend

from tests.conftest import MODEL_SOURCES, MODELS_DIR, SHARED_DATA

LFW = SHARED_DATA / "lfw" / "images"
FILES = sorted(LFW.glob("*/*.jpg"))


class CountingBackend:
    def __init__(self, inner: OnnxRuntimeBackend) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(role)
        return self.inner.run(role, feeds)

    def has(self, role: str) -> bool:
        return self.inner.has(role)


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(MODELS_DIR)


@pytest.fixture(scope="module")
def mesh_of(backend: OnnxRuntimeBackend) -> Any:
    detector = MtcnnDetector(backend)
    fm = FaceMesh(backend)

    def run(image: np.ndarray, near: np.ndarray | None = None) -> Mesh | None:
        """Mesh of the largest face MTCNN finds (the one nearest `near` (x, y)), or None."""
        det = detector.detect(image)
        if len(det) == 0:
            return None
        k = 0
        if near is not None:
            centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
            k = int(np.argmin(np.linalg.norm(centres - near, axis=1)))
        return fm.predict(image, det.boxes[k : k + 1], det.points[k : k + 1])

    return run


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def test_batched_predict_runs_once(backend: OnnxRuntimeBackend) -> None:
    image = _read(SHARED_DATA / "misc" / "couple.jpg")
    det = MtcnnDetector(backend).detect(image)
    assert len(det) >= 2
    counting = CountingBackend(backend)
    fm = FaceMesh(counting)
    both = fm.predict(image, det.boxes[:2], det.points[:2])
    assert counting.calls == ["landmarks468"]
    assert both.points.shape == (2, 468, 3) and both.points.dtype == np.float32
    assert (both.score > 0.9).all()
    one = fm.predict(image, det.boxes[1:2], det.points[1:2])
    np.testing.assert_allclose(both.points[1], one.points[0], atol=1e-3)
    empty = fm.predict(image, np.zeros((0, 4), np.float32))
    assert len(empty) == 0 and landmarks72(empty).shape == (0, 72, 2)
    assert len(counting.calls) == 2  # the empty call ran nothing


def test_72_points_agree_with_dlib_5_points(mesh_of: Any) -> None:
    """Eye corners, eye centres and the nose base against dlib's 5-point predictor."""
    predictor = dlib.shape_predictor(str(member_path("dlib_shape5", MODEL_SOURCES)))
    hog = dlib.get_frontal_face_detector()
    errors = []
    for path in FILES[::101][:30]:
        image = _read(path)
        rects = hog(np.ascontiguousarray(image[:, :, ::-1]), 0)
        if not rects:
            continue
        rect = max(rects, key=lambda r: r.area())
        mesh = mesh_of(image, near=np.array([rect.center().x, rect.center().y]))
        h, w = image.shape[:2]
        if mesh is None or abs(head_pose(mesh.points[0], (w, h))[0]) > 30:
            continue  # beyond 30 degrees of yaw the far eye's outer corner is hidden
        d = np.array([(p.x, p.y) for p in predictor(image[:, :, ::-1].copy(), rect).parts()], float)
        d += 0.5  # dlib gives pixel indices; we use pixel edges (centre of pixel 0 is 0.5)
        # dlib's 5 points: image-right eye (outer, inner corner), image-left eye (outer, inner),
        # nose base.
        p72 = landmarks72(mesh)[0]
        iod = np.linalg.norm(d[:2].mean(0) - d[2:4].mean(0))
        pairs = [
            (13, d[2]),
            (17, d[3]),
            (34, d[0]),
            (30, d[1]),
            (51, d[4]),
            (21, d[2:4].mean(0)),
            (38, d[:2].mean(0)),
        ]
        errors.append([np.linalg.norm(p72[i] - ref) / iod for i, ref in pairs])
    e = np.array(errors)
    assert len(e) >= 20
    # Eye corners and the nose base of two different annotation schemes: within 20% of the
    # inter-ocular distance on every face, 8% on average (measured: 14%, 6%); the eye centres,
    # means of several points, within 12% (measured 8%).
    assert e.max() < 0.2, e.max(axis=0)
    assert e.mean(axis=0).max() < 0.08, e.mean(axis=0)
    assert e[:, 5:].max() < 0.12, e[:, 5:].max(axis=0)
    l4 = landmark4(mesh)
    np.testing.assert_allclose(l4[0, :3], p72[[21, 38, 57]], atol=1e-4)


def test_72_points_lie_in_their_regions(mesh_of: Any) -> None:
    n = 0
    for path in FILES[::211][:15]:
        image = _read(path)
        mesh = mesh_of(image)
        h, w = image.shape[:2]
        if mesh is None or abs(head_pose(mesh.points[0], (w, h))[0]) > 30:
            continue  # turned further, the far contour hides behind the face
        n += 1
        p = landmarks72(mesh)[0]
        le, re = p[21], p[38]
        iod = np.linalg.norm(re - le)
        assert le[0] < re[0]  # "left" is the viewer's left
        # Eyes: 8 points around each centre, within half an eye width, corners left and right.
        for eye, c in ((range(13, 21), le), (range(30, 38), re)):
            assert np.linalg.norm(p[list(eye)] - c, axis=1).max() < 0.4 * iod
        assert p[13, 0] < le[0] < p[17, 0] and p[30, 0] < re[0] < p[34, 0]
        # Brows above their eye, nose between the eyes and above the mouth, chin lowest.
        assert (p[22:30, 1] < le[1]).all() and (p[39:47, 1] < re[1]).all()
        assert p[22:30, 0].mean() < p[39:47, 0].mean()
        assert le[0] < p[57, 0] < re[0] and p[57, 1] < p[58:72, 1].min()
        assert p[6, 1] == p[:, 1].max()
        # Contour runs from the left side round the chin to the right side.
        assert (p[0:3, 0] < le[0]).all() and (p[10:13, 0] > re[0]).all()
        assert (np.diff(p[0:7, 1]) > 0).all() and (np.diff(p[6:13, 1]) < 0).all()
        # Mouth: corners 58 (left) and 62 (right) bound the lips; upper lip above lower lip.
        assert p[58, 0] < p[58:72, 0].min() + 1e-3 and p[62, 0] > p[58:72, 0].max() - 1e-3
        assert p[60, 1] < p[67, 1] <= p[70, 1] + 0.5 < p[64, 1] + 0.5
    assert n >= 12
    assert len(set(MESH72.tolist()) - {-1}) == 70  # no mesh point used twice


def test_eyes_score_open_on_lfw(mesh_of: Any) -> None:
    scores = []
    for path in FILES[::61][:40]:
        mesh = mesh_of(_read(path))
        if mesh is not None:
            scores.append(eye_open(mesh)[0])
    s = np.array(scores)
    assert len(s) >= 35
    # LFW news photos: almost all eyes open (a few blink or squint).
    assert np.median(s) > 0.95 and (s > 0.5).mean() > 0.9
    assert ((s >= 0) & (s <= 1)).all()
    # Hand-labelled: both eyes shut.
    shut = mesh_of(_read(LFW / "Nelson_Mandela" / "Nelson_Mandela_0001.jpg"))
    assert shut is not None and (eye_open(shut) < 0.2).all()


def test_mouth_open_ratio(mesh_of: Any) -> None:
    closed = mesh_of(_read(LFW / "Aaron_Patterson" / "Aaron_Patterson_0001.jpg"))
    grin = mesh_of(_read(LFW / "Alex_Barros" / "Alex_Barros_0001.jpg"))  # teeth apart
    assert closed is not None and grin is not None
    assert mouth_open_ratio(closed)[0] < 0.05 and 0.1 < mouth_open_ratio(grin)[0] < 0.5


def _poses(mesh_of: Any, image: np.ndarray) -> tuple[float, float, float] | None:
    mesh = mesh_of(image)
    if mesh is None:
        return None
    h, w = image.shape[:2]
    return head_pose(mesh.points[0], (w, h))


def test_pose_flips_on_mirrored_faces(mesh_of: Any) -> None:
    found = []
    for path in FILES[::37]:
        image = _read(path)
        mesh = mesh_of(image)
        if mesh is None:
            continue
        h, w = image.shape[:2]
        pose = head_pose(mesh.points[0], (w, h))
        if abs(pose[0]) <= 10:
            continue
        # Image evidence for the sign: the nose tip lies towards the side the face turns to.
        p = mesh.points[0]
        assert np.sign(pose[0]) == np.sign(p[1, 0] - (p[33, 0] + p[263, 0]) / 2)
        mirrored = _poses(mesh_of, np.ascontiguousarray(image[:, ::-1]))
        if mirrored is None:
            continue
        found.append((pose, mirrored))
        if len(found) == 20:
            break
    assert len(found) == 20
    a = np.array([f[0] for f in found])
    b = np.array([f[1] for f in found])
    assert (np.sign(a[:, 0]) == -np.sign(b[:, 0])).all()
    # The mesh is not exactly mirror-symmetric: measured worst cases 4.6, 7.0, 2.6 degrees.
    assert np.abs(a[:, 0] + b[:, 0]).max() < 8  # yaw
    assert np.abs(a[:, 1] - b[:, 1]).max() < 8  # pitch unchanged
    assert np.abs(a[:, 2] + b[:, 2]).max() < 4  # roll
    assert np.abs(a - b * [-1, 1, -1]).mean(axis=0).max() < 3


@pytest.mark.parametrize("degrees", [20, -20])
def test_roll_follows_image_rotation(mesh_of: Any, degrees: float) -> None:
    """Turning the photo clockwise by 20 degrees adds 20 to roll (Baidu: clockwise positive)."""
    deltas = []
    for path in FILES[::149][:20]:
        image = _read(path)
        before = _poses(mesh_of, image)
        h, w = image.shape[:2]
        # getRotationMatrix2D's positive angle turns the picture counter-clockwise on screen.
        m = cv2.getRotationMatrix2D((w / 2, h / 2), -degrees, 1.0)
        after = _poses(mesh_of, cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
        if before is None or after is None or max(abs(before[0]), abs(before[1])) > 20:
            continue
        deltas.append(after[2] - before[2])
        assert rotation(after[2]) == round(after[2])
    d = np.array(deltas)
    assert len(d) >= 12
    assert abs(np.median(d) - degrees) < 1.5 and np.abs(d - degrees).max() < 4, d


def test_pitch_sign_follows_the_nose_in_the_image(mesh_of: Any) -> None:
    """Looking down is positive: the nose tip then lies lower between the eyes and the mouth.

    Pitch comes from the mesh's depth (forehead against nose base and chin); the evidence here is
    the 2-D position of the nose tip along the eye-mouth line, which does not use depth.
    """
    pitch, along = [], []
    for path in FILES[::29][:60]:
        mesh = mesh_of(_read(path))
        if mesh is None:
            continue
        p = mesh.points[0]
        pitch.append(head_pose(p)[1])
        eyes, mouth = (p[33, :2] + p[263, :2]) / 2, (p[61, :2] + p[291, :2]) / 2
        v = mouth - eyes
        along.append(float((p[1, :2] - eyes) @ v / (v @ v)))
    a, t = np.array(pitch), np.array(along)
    assert len(a) >= 55
    # Measured on 385 LFW faces: correlation 0.90; mean position 0.43 for pitch < -10, 0.59 for
    # |pitch| <= 10, 0.71 for pitch > 10.
    assert np.corrcoef(a, t)[0, 1] > 0.75
    assert t[a < -5].mean() < t[np.abs(a) <= 5].mean() < t[a > 5].mean()


def _r(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Baidu's R = Ry(yaw) Rx(pitch) Rz(roll) in camera axes (x right, y down, z away).

    Yaw towards the image's right turns the nose (-z) towards +x: a rotation about +y by -yaw.
    """
    y, p, r = np.radians([-yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


@pytest.mark.parametrize(
    "angles", [(30, 0, 0), (0, -25, 0), (0, 0, 40), (-35, 15, -20), (60, -40, 150)]
)
def test_pose_recovers_a_known_rotation_of_a_real_mesh(
    mesh_of: Any, angles: tuple[float, float, float]
) -> None:
    """A real mesh turned into its own frame (pose 0) and rotated by R gives R's angles back."""
    mesh = mesh_of(_read(FILES[0]))
    assert mesh is not None
    p = mesh.points[0].astype(np.float64)
    centred = (p - p.mean(axis=0)) @ face_frame(p)  # face axes: the frame is now the identity
    np.testing.assert_allclose(head_pose(centred + 100), (0, 0, 0), atol=1e-6)
    turned = centred @ _r(*angles).T + np.array([120.0, 130.0, 0.0])
    np.testing.assert_allclose(head_pose(turned, (250, 250)), angles, atol=1e-6)
    with pytest.raises(ValueError):
        head_pose(p[:, :2])
