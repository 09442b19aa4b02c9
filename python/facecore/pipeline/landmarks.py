"""Dense face landmarks: MediaPipe's 468-point face mesh, and the point sets the API returns.

`FaceMesh.predict` crops every face the way MediaPipe crops from a detection (a square 1.5x the
box, rotated upright by the eye line), runs all crops through the "landmarks468" model in one
batch, and maps the points back to the image. From the mesh we derive Baidu's 72-point layout
(`landmarks72`), the 4-point `landmark4`, eye opening and mouth opening; docs/landmarks.md has
the index tables with pictures.

Coordinates: continuous pixel coordinates where pixel column i spans [i, i+1) (the convention of
`facecore.pipeline.detect` boxes), so the centre of the top-left pixel is (0.5, 0.5). "Left" means the
viewer's left (the subject's right eye is the "left eye"), as MTCNN's points are ordered too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facecore.runtime.backend import Backend

ROLE = "landmarks468"
CROP = 192
CROP_SCALE = 1.5  # MediaPipe's ROI: the detection box enlarged 1.5x (square on the long side)


@dataclass(frozen=True)
class Mesh:
    """Face meshes of the faces of one image."""

    points: np.ndarray  # (N, 468, 3) float32: x, y image pixels; z depth, same scale as x
    score: np.ndarray  # (N,) float32 face presence probability of the crop (sigmoid of the logit)
    crop_to_image: np.ndarray  # (N, 2, 3) float32 affine: crop continuous coords -> image coords

    def __len__(self) -> int:
        return int(self.points.shape[0])


def crop_transforms(boxes: np.ndarray, points5: np.ndarray | None) -> np.ndarray:
    """(N, 2, 3) affine maps from the 192x192 crop to the image (continuous coordinates).

    The crop is a square of side 1.5x the longer box side around the box centre, its x axis along
    the eye line when 5 points are given (left eye, right eye, nose, mouth corners).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = CROP_SCALE * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if points5 is None:
        angle = np.zeros(len(boxes))
    else:
        p = np.asarray(points5, np.float64).reshape(-1, 5, 2)
        d = p[:, 1] - p[:, 0]
        angle = np.arctan2(d[:, 1], d[:, 0])
    s = side / CROP
    cos, sin = np.cos(angle) * s, np.sin(angle) * s
    m = np.empty((len(boxes), 2, 3))
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    # image = c + A @ (u - 96)  =>  translation c - A @ (96, 96)
    m[:, :, 2] = centre - (m[:, :, :2] @ np.full(2, CROP / 2))
    return m


def warp_crops(image_bgr: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """(N, 3, 192, 192) float32 RGB crops, 0..255, as the model's NCHW input."""
    out = np.empty((len(transforms), CROP, CROP, 3), np.uint8)
    for k, m in enumerate(transforms):
        # warpAffine works on pixel indices (centre of pixel i at i): shift by half a pixel on both
        # sides of the map. dst(j) = src(A @ (j + 0.5) + t - 0.5).
        a = m[:, :2]
        t = m[:, 2] + a @ np.full(2, 0.5) - 0.5
        inv = np.concatenate([a, t[:, None]], axis=1)
        cv2.warpAffine(
            image_bgr,
            inv,
            (CROP, CROP),
            dst=out[k],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return np.ascontiguousarray(out[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)


class FaceMesh:
    """MediaPipe face mesh through a Backend (role "landmarks468")."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def predict(
        self, image_bgr: np.ndarray, boxes: np.ndarray, points5: np.ndarray | None = None
    ) -> Mesh:
        """Meshes for the faces in `boxes` (N, 4) x1, y1, x2, y2 of an OpenCV BGR uint8 image.

        `points5` (N, 5, 2), the detector's eye/nose/mouth points, makes the crop upright for
        tilted heads; without them the crop is axis-aligned (fine up to ~30 degrees of roll).
        """
        if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
            raise ValueError("image_bgr must be a uint8 numpy array (OpenCV BGR image)")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"image_bgr must be HxWx3 BGR, got shape {image_bgr.shape}")
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if points5 is not None:
            points5 = np.asarray(points5, np.float32).reshape(-1, 5, 2)
            if len(points5) != len(boxes):
                raise ValueError(f"points5 has {len(points5)} faces, boxes {len(boxes)}")
        n = len(boxes)
        if n == 0:
            return Mesh(
                np.zeros((0, 468, 3), np.float32),
                np.zeros((0,), np.float32),
                np.zeros((0, 2, 3), np.float32),
            )
        m = crop_transforms(boxes, points5)
        crops = warp_crops(image_bgr, m)
        lm, _logit, prob = self.backend.run(ROLE, {"image": crops})
        lm = lm.reshape(n, 468, 3).astype(np.float64)
        pts = np.empty_like(lm)
        pts[..., :2] = np.einsum("nij,nkj->nki", m[:, :, :2], lm[..., :2]) + m[:, None, :, 2]
        scale = np.hypot(m[:, 0, 0], m[:, 1, 0])
        pts[..., 2] = lm[..., 2] * scale[:, None]
        return Mesh(
            pts.astype(np.float32), prob.reshape(n).astype(np.float32), m.astype(np.float32)
        )


# Baidu's 72-point layout as indices into the 468-point mesh; -1 marks the eye centres, each the
# mean of its 8 eye points. "Left" is the viewer's left. Every closed outline starts at its
# image-left end and runs over the top, left to right, then back along the bottom; the reasoning
# and a picture are in docs/landmarks.md.
_CONTOUR = [127, 93, 132, 172, 150, 176, 152, 400, 379, 397, 361, 323, 356]  # 0-12
LEFT_EYE = [33, 160, 159, 158, 133, 153, 145, 144]  # 13-20, outer corner, over the top, back
LEFT_BROW = [70, 63, 105, 66, 107, 65, 52, 53]  # 22-29, outer end, top edge, inner end, bottom
RIGHT_EYE = [362, 385, 386, 387, 263, 373, 374, 380]  # 30-37, inner corner, over the top, back
RIGHT_BROW = [336, 296, 334, 293, 300, 283, 282, 295]  # 39-46, inner end, top edge, outer end
_NOSE = [196, 236, 49, 98, 2, 327, 279, 456, 419, 6, 1]  # 47-57: left side down, right side up,
#                                                        56 bridge, 57 tip
_MOUTH = [61, 39, 0, 269, 291, 405, 17, 181, 81, 13, 311, 402, 14, 178]  # 58-71
MESH72 = np.array(
    _CONTOUR + LEFT_EYE + [-1] + LEFT_BROW + RIGHT_EYE + [-1] + RIGHT_BROW + _NOSE + _MOUTH
)
assert MESH72.shape == (72,)
NOSE_TIP = 1
MOUTH_INNER = (13, 14)  # upper and lower inner lip, centre
MOUTH_CORNERS = (61, 291)


def _eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the image-left and image-right eye: mean of the 8 eye contour points."""
    return points[:, LEFT_EYE, :2].mean(axis=1), points[:, RIGHT_EYE, :2].mean(axis=1)


def landmarks72(mesh: Mesh) -> np.ndarray:
    """(N, 72, 2) float32 Baidu-layout landmarks in image pixels."""
    p = mesh.points
    out = p[:, np.maximum(MESH72, 0), :2].copy()
    out[:, 21], out[:, 38] = _eye_centres(p)
    return out.astype(np.float32)


def landmark4(mesh: Mesh) -> np.ndarray:
    """(N, 4, 2) float32: left eye centre, right eye centre, nose tip, mouth centre."""
    p = mesh.points
    le, re = _eye_centres(p)
    mouth = p[:, list(MOUTH_INNER), :2].mean(axis=1)
    return np.stack([le, re, p[:, NOSE_TIP, :2], mouth], axis=1).astype(np.float32)


def _dist(p: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.asarray(np.linalg.norm(p[:, a] - p[:, b], axis=-1))


def eye_aspect_ratio(mesh: Mesh) -> np.ndarray:
    """(N, 2) eye aspect ratio (lid gap / eye width, 3-D mesh distances) of the left, right eye.

    3-D distances make it nearly independent of yaw, which shortens eye width in the image.
    """
    out = []
    for e in (LEFT_EYE, RIGHT_EYE):
        c0, t1, _t2, t3, c4, b5, _b6, b7 = e  # corners c0, c4; lids t1/b7 and t3/b5 face each other
        gap = _dist(mesh.points, t1, b7) + _dist(mesh.points, t3, b5)
        out.append(gap / (2 * _dist(mesh.points, c0, c4)))
    return np.stack(out, axis=1).astype(np.float32)


# Eye-open probability = sigmoid((EAR - EAR_MID) / EAR_SCALE). Calibrated by eye on LFW: among the
# 24 lowest-EAR faces of a 512-image sample (every 6th file), those under ~0.14 had shut or
# squinting eyes and those over ~0.165 open ones; the median open eye is 0.26 (docs/landmarks.md).
EAR_MID = 0.145
EAR_SCALE = 0.012


def eye_open(mesh: Mesh) -> np.ndarray:
    """(N, 2) probability in [0, 1] that the left, right eye (viewer's left first) is open."""
    z = (eye_aspect_ratio(mesh).astype(np.float64) - EAR_MID) / EAR_SCALE
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def mouth_open_ratio(mesh: Mesh) -> np.ndarray:
    """(N,) inner-lip gap / mouth width (3-D mesh distances): 0.03-0.05 closed, ~0.5 wide open."""
    p = mesh.points
    ratio: np.ndarray = _dist(p, *MOUTH_INNER) / _dist(p, *MOUTH_CORNERS)
    return ratio.astype(np.float32)
