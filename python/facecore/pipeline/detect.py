"""Face detection: MTCNN (Zhang et al. 2016) with our own pyramid, NMS and box regression.

Three cascaded networks run through a Backend (see `facecore.convert.mtcnn` for their contract):
P-Net scans an image pyramid with a 12x12 window (stride 2) and proposes boxes; R-Net (24x24) and
O-Net (48x48) re-score and refine all proposals in one batch each; O-Net also gives 5 landmarks.

Box convention: float (x1, y1, x2, y2) pixel *edges* (a box covering pixel columns 10..49 is
x1=10, x2=50), in the input image's coordinates, NOT clipped to the image (a face cut by the frame
gets a box reaching past it). R-Net and O-Net see square crops, but the returned boxes are O-Net's
regression of those squares: forehead to chin and cheek to cheek, typically about 0.8x as wide as
tall (e.g. 33x42 px where dlib's HOG box is 37x37). Callers wanting a square take the larger side
around the centre. Detections are sorted by box area, largest first.

Speed: the pyramid starts at scale 12 / min_face, so a 640x480 image with min_face 40 puts about
55k pixels (all levels) through P-Net; every face candidate is cut from the smallest pyramid level
that still holds it, and R-Net and O-Net each run once on all candidates.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from facecore.errors import InvalidArgument
from facecore.runtime.backend import Backend

_WINDOW = 12  # P-Net's receptive field
_STRIDE = 2  # P-Net's output stride


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, largest box first."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32 O-Net face probability
    points: np.ndarray  # (N, 5, 2) float32: left eye, right eye, nose, left/right mouth corner

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, use_min: bool = False
) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    Overlap is intersection over union (OpenCV's C++ NMSBoxes: several times faster than numpy on
    the hundreds of P-Net windows of one level), or intersection over the smaller box when
    `use_min` (the last MTCNN stage uses that to drop a small box nested in a big one).
    """
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.intp)
    if not use_min:
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)
        keep = cv2.dnn.NMSBoxes(
            xywh.astype(np.float64),  # type: ignore[arg-type]  # the stubs want lists
            scores.astype(np.float32),  # type: ignore[arg-type]
            0.0,
            threshold,
        )
        return np.asarray(keep, np.intp).reshape(-1)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        i = int(order[0])
        kept.append(i)
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        order = rest[inter <= threshold * np.minimum(area[i], area[rest])]
    return np.asarray(kept, np.intp)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes moved by the networks' offsets, which are fractions of the box width/height."""
    wh = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2]] * 2, axis=1)
    out: np.ndarray = boxes + reg * wh
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Squares of side max(w, h) with the same centres: R-Net and O-Net take square crops."""
    c = (boxes[:, 0:2] + boxes[:, 2:4]) * 0.5
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) * 0.5
    return np.concatenate([c - half, c + half], axis=1)


def _downscale(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """`image` resized to w x h, anti-aliased. OpenCV's INTER_AREA is ~15x slower at fractional
    ratios than at exactly 2x, so a big step goes bilinear to (2w, 2h), then area-halves; a step
    under 2x is bilinear (its aliasing is mild)."""
    ih, iw = image.shape[:2]
    if iw >= 2 * w and ih >= 2 * h:
        if (iw, ih) != (2 * w, 2 * h):
            image = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class _Level:
    """One image of the pyramid and its scale per axis (sizes are rounded up to even)."""

    image: np.ndarray
    sx: float
    sy: float


def _crops(levels: list[_Level], boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, size, size) float32 crops of square `boxes` (zero outside the image), and the boxes
    they were actually taken from after rounding (landmarks and offsets refer to those).

    Each box is cut from the smallest pyramid level where it still spans >= `size` pixels, so
    resizing touches few pixels: a 200-pixel face costs the same as a 50-pixel one.
    `levels` are sorted by scale, the original image first.
    """
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    scales = np.array([lv.sx for lv in levels])
    # Last level whose scale is still >= size / side (scales decrease); the original at worst.
    pick = np.maximum(np.searchsorted(-scales, -size / np.maximum(side, 1e-6), side="right") - 1, 0)
    scale = np.array([(lv.sx, lv.sy, lv.sx, lv.sy) for lv in levels])[pick]
    ib = np.round(boxes * scale).astype(np.int64)
    ib[:, 2:4] = np.maximum(ib[:, 2:4], ib[:, 0:2] + 1)  # at least one pixel
    out = np.empty((boxes.shape[0], size, size, 3), np.uint8)
    for k, ((x1, y1, x2, y2), p) in enumerate(zip(ib.tolist(), pick.tolist())):
        image = levels[p].image
        h, w = image.shape[:2]
        if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
            patch = image[y1:y2, x1:x2]
        else:
            patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        cv2.resize(patch, (size, size), dst=out[k], interpolation=cv2.INTER_AREA)
    return out.transpose(0, 3, 1, 2).astype(np.float32), ib / scale


class MtcnnDetector:
    """MTCNN face detector; runs its three models through `backend` ("mtcnn_pnet", ...).

    min_face: smallest face searched for, in pixels of the input image: P-Net's 12-pixel window
        at the first pyramid level (scale 12 / min_face). Faces a little smaller are often found.
    thresholds: face-probability cut-offs of P-Net, R-Net, O-Net.
    factor: scale step between pyramid levels (0.6, not the original 0.709: 22% less P-Net work,
        same results on our test photos; see docs/detector.md).
    max_side: images whose longer side exceeds this are searched as if downscaled to it, so the
        smallest face found there is min_face * longer_side / max_side (bounds the time per image).
    """

    # NMS overlap thresholds of the original MTCNN: per P-Net level and across levels (IoU), after
    # R-Net (IoU), after O-Net (intersection over the smaller box). 0.5 after R-Net would halve
    # O-Net's work but loses borderline faces (one of dlib's annotated faces in 2008_002079.jpg).
    nms_level = 0.5
    nms_pyramid = 0.7
    nms_rnet = 0.7
    nms_onet = 0.7

    def __init__(
        self,
        backend: Backend,
        min_face: float = 40.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8),
        factor: float = 0.6,
        max_side: int = 1920,
    ) -> None:
        if min_face < _WINDOW:
            raise InvalidArgument(f"min_face must be >= {_WINDOW} pixels, got {min_face}")
        if not 0.1 <= factor < 1.0:
            raise InvalidArgument(f"factor must be in [0.1, 1), got {factor}")
        if max_side < _WINDOW:
            raise InvalidArgument(f"max_side must be >= {_WINDOW}, got {max_side}")
        self.backend = backend
        self.min_face = float(min_face)
        self.thresholds = thresholds
        self.factor = factor
        self.max_side = max_side

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales for an image of this size, largest first (empty if it is too small)."""
        s = _WINDOW / self.min_face * min(1.0, self.max_side / max(height, width))
        out = []
        while min(height, width) * s >= _WINDOW:
            out.append(s)
            s *= self.factor
        return out

    def detect(self, image_bgr: np.ndarray, timings: dict[str, float] | None = None) -> Detections:
        """Faces in an OpenCV BGR uint8 HxWx3 image. `timings`, if given, receives seconds per
        stage (pnet, rnet, onet: model time; python: everything else)."""
        if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
            raise InvalidArgument("image_bgr must be a uint8 numpy array (OpenCV BGR image)")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise InvalidArgument(f"image_bgr must be HxWx3 BGR, got shape {image_bgr.shape}")
        t = {"pnet": 0.0, "rnet": 0.0, "onet": 0.0}
        t_start = time.perf_counter()
        image = np.ascontiguousarray(image_bgr)
        result = self._detect(image, t)
        if timings is not None:
            timings.update(t)
            timings["python"] = time.perf_counter() - t_start - sum(t.values())
        return result

    def _detect(self, image: np.ndarray, t: dict[str, float]) -> Detections:
        levels = self._pyramid(image)
        boxes = self._stage1(levels, t)
        if boxes.shape[0]:
            boxes = self._stage2([_Level(image, 1.0, 1.0), *levels], boxes, t)
        if boxes.shape[0] == 0:
            return Detections.empty()
        return self._stage3([_Level(image, 1.0, 1.0), *levels], boxes, t)

    def _pyramid(self, image: np.ndarray) -> list[_Level]:
        """P-Net's input levels, largest first, each resized from the previous one."""
        h, w = image.shape[:2]
        levels: list[_Level] = []
        src = image
        for s in self.scales(h, w):
            # Even sizes: P-Net's 2x2 pooling then pads nothing, so its window grid is
            # left-right symmetric and a mirrored image gives mirrored boxes.
            lw, lh = (max(_WINDOW, 2 * math.ceil(v * s / 2)) for v in (w, h))
            src = _downscale(src, lw, lh)
            levels.append(_Level(src, lw / w, lh / h))
        return levels

    def _stage1(self, levels: list[_Level], t: dict[str, float]) -> np.ndarray:
        """P-Net proposals over the pyramid: (N, 4) squared, regressed boxes."""
        found_boxes, found_scores = [], []
        for lv in levels:
            blob = lv.image.transpose(2, 0, 1)[None].astype(np.float32)
            t0 = time.perf_counter()
            reg, prob = self.backend.run("mtcnn_pnet", {"image": blob})
            t["pnet"] += time.perf_counter() - t0
            ys, xs = np.nonzero(prob[0, 0] >= self.thresholds[0])
            if ys.size == 0:
                continue
            x1 = xs * (_STRIDE / lv.sx)
            y1 = ys * (_STRIDE / lv.sy)
            b = np.stack([x1, y1, x1 + _WINDOW / lv.sx, y1 + _WINDOW / lv.sy], axis=1)
            b = np.concatenate([b, reg[0][:, ys, xs].T], axis=1)  # x1 y1 x2 y2 dx1 dy1 dx2 dy2
            score = prob[0, 0, ys, xs]
            keep = nms(b[:, :4], score, self.nms_level)
            found_boxes.append(b[keep])
            found_scores.append(score[keep])
        if not found_boxes:
            return np.zeros((0, 4), np.float64)
        b = np.concatenate(found_boxes)
        keep = nms(b[:, :4], np.concatenate(found_scores), self.nms_pyramid)
        b = b[keep]
        return _square(_regress(b[:, :4], b[:, 4:]))

    def _stage2(self, levels: list[_Level], boxes: np.ndarray, t: dict[str, float]) -> np.ndarray:
        """R-Net refinement of all proposals in one batch."""
        crops, boxes = _crops(levels, boxes, 24)
        t0 = time.perf_counter()
        reg, prob = self.backend.run("mtcnn_rnet", {"image": crops})
        t["rnet"] += time.perf_counter() - t0
        score = prob[:, 0]
        ok = score > self.thresholds[1]
        boxes, reg, score = boxes[ok], reg[ok], score[ok]
        keep = nms(boxes, score, self.nms_rnet)
        return _square(_regress(boxes[keep], reg[keep]))

    def _stage3(self, levels: list[_Level], boxes: np.ndarray, t: dict[str, float]) -> Detections:
        """O-Net: final scores, boxes and landmarks, in one batch."""
        crops, boxes = _crops(levels, boxes, 48)
        t0 = time.perf_counter()
        reg, marks, prob = self.backend.run("mtcnn_onet", {"image": crops})
        t["onet"] += time.perf_counter() - t0
        score = prob[:, 0]
        ok = score > self.thresholds[2]
        boxes, reg, marks, score = boxes[ok], reg[ok], marks[ok], score[ok]
        size = boxes[:, 2:4] - boxes[:, 0:2]
        points = np.stack(
            [
                boxes[:, None, 0] + marks[:, 0:5] * size[:, None, 0],
                boxes[:, None, 1] + marks[:, 5:10] * size[:, None, 1],
            ],
            axis=2,
        )
        boxes = _regress(boxes, reg)
        keep = nms(boxes, score, self.nms_onet, use_min=True)
        boxes, score, points = boxes[keep], score[keep], points[keep]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area, kind="stable")
        return Detections(
            boxes[order].astype(np.float32),
            score[order].astype(np.float32),
            points[order].astype(np.float32),
        )
