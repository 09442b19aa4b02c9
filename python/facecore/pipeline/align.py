"""Face alignment: dlib's 5-point landmarks and its 150x150 face chips, reproduced in numpy.

The recogniser (facecore.pipeline.embed) was trained on chips cut by dlib's `get_face_chip` from its 5-point
shape predictor's landmarks, so this module follows dlib's arithmetic exactly where it can
(tests/facecore/test_align.py checks it against dlib itself):

- `Shape5Predictor` evaluates dlib's cascade of regression trees. Grey is dlib's (R+G+B)//3; pixel
  lookups round to the nearest pixel, and pixels outside the image read 0. dlib rounds the landmarks
  it returns to integers; we return them unrounded (round half up to get dlib's).
- `chip_transform` is dlib's `get_face_chip_details` for 5 points and `extract_chips` its
  `extract_image_chips`: bilinear, truncated to uint8, black outside the image, and for a face much
  larger than the chip, sampled from dlib's 2x Gaussian pyramid of the face's neighbourhood.
- `chip_transform_from_mtcnn` cuts the same chip from a detector's own 5 points (eye centres, nose
  tip, mouth corners), mapped onto where dlib's chips put those features (MTCNN_TEMPLATE5, fitted
  on LFW geometry). Accuracy of each alignment on LFW pairs: docs/accuracy.md.

A box is our float (x1, y1, x2, y2), x2/y2 exclusive. dlib's rectangles are integer and inclusive,
so box -> rect is (round(x1), round(y1), round(x2) - 1, round(y2) - 1), the inverse of the usual
dlib rect -> box (left, top, right + 1, bottom + 1): a box that came from dlib goes back unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from facecore.errors import InvalidArgument, InvalidType

# dlib's 5-point chip template on the unit square (get_face_chip_details): outer and inner corner
# of the eye on the image's right, the same for the eye on the image's left, base of the nose.
DLIB_TEMPLATE5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# Where MTCNN's 5 points (left eye, right eye, nose, left and right mouth corner, "left" = image
# left) fall in dlib's chip, in the same unit-square frame as DLIB_TEMPLATE5. Fitted, not derived:
# the mean over the 1,465 LFW faces (every 2nd image) where dlib's HOG detector finds exactly one
# face, of facecore.pipeline.detect's MTCNN points mapped into the chip that dlib's geometry cuts from our
# Shape5Predictor's points on the HOG box (tools/fit_alignment.py; std 1.6-1.8 px for the eyes,
# 4-6 px for nose and mouth at 150 px). Geometry only: no identity labels are involved.
MTCNN_TEMPLATE5 = np.array(
    [
        [0.2235, 0.2037],
        [0.7693, 0.2029],
        [0.4954, 0.5263],
        [0.2520, 0.7999],
        [0.7362, 0.7997],
    ]
)

# dlib's shape predictor was trained on boxes of dlib's HOG detector; MTCNN's boxes are taller
# and sit higher. This maps an MTCNN box onto the HOG box of the same face: centre shifted by
# (dx, dy) and a square of side s, all in units of sqrt(width * height) of the MTCNN box. Medians
# over the 1,465 LFW faces (every 2nd image) where HOG (upsample 1) found exactly one face
# (tools/fit_alignment.py, which also compares the alignments; docs/accuracy.md).
MTCNN_TO_DLIB_BOX = {"dx": -0.0152, "dy": 0.0667, "s": 0.9889}

CHIP_SIZE = 150
CHIP_PADDING = 0.25


def dlib_boxes_from_mtcnn(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) float32 boxes like dlib's HOG detector would draw for MTCNN's (N, 4) boxes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = np.sqrt(np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0))
    cx = (b[:, 0] + b[:, 2]) / 2 + MTCNN_TO_DLIB_BOX["dx"] * side
    cy = (b[:, 1] + b[:, 3]) / 2 + MTCNN_TO_DLIB_BOX["dy"] * side
    half = MTCNN_TO_DLIB_BOX["s"] * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidType("image must be a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InvalidArgument(f"image must be HxWx3 BGR, got shape {image.shape}")
    return image


def boxes_to_dlib_rects(boxes: np.ndarray) -> np.ndarray:
    """Float (x1, y1, x2, y2) boxes -> dlib's inclusive integer (left, top, right, bottom)."""
    b = np.floor(np.asarray(boxes, np.float64).reshape(-1, 4) + 0.5)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - 1, b[:, 3] - 1], axis=1)


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, rotation, translation; no reflection) src -> dst, batched.

    src, dst: (..., K, 2). Returns (M (..., 2, 2), t (..., 2)) in float64. This is the closed form
    of Umeyama's estimate in 2-D (the rotation that maximises the correlation, scaled), which is
    what dlib's find_similarity_transform computes through an SVD.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms = src.mean(axis=-2)
    md = dst.mean(axis=-2)
    s = src - ms[..., None, :]
    d = dst - md[..., None, :]
    var = (s * s).sum(axis=(-1, -2))
    var = np.where(var == 0, 1.0, var)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(axis=-1) / var
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(axis=-1) / var
    m = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)
    t = md - np.einsum("...ij,...j->...i", m, ms)
    return m, t


def similarity_from_points(src5: np.ndarray, dst5: np.ndarray) -> np.ndarray:
    """2x3 affine of the least-squares similarity mapping points `src5` onto `dst5` (Umeyama)."""
    src = np.asarray(src5, np.float64)
    dst = np.asarray(dst5, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InvalidArgument(f"need two (K,2) point sets with K >= 2, got {src.shape} {dst.shape}")
    m, t = _similarity(src, dst)
    return np.concatenate([m, t[:, None]], axis=1)


# ------------------------------------------------------------------------------------------------
# 5-point shape predictor


class Shape5Predictor:
    """dlib's shape_predictor_5_face_landmarks, from the arrays of facecore.convert.dlib_shape.

    All faces of a call advance through the cascades together; within a cascade the 500 trees are
    walked level by level as array lookups, so the cost per face is a few hundred numpy operations
    shared by every face of the image.
    """

    def __init__(self, npz_path: Path | str) -> None:
        with np.load(npz_path) as z:
            self.initial = z["initial_shape"].reshape(-1, 2)  # (L, 2) float32
            idx1 = z["split_idx1"].astype(np.intp)  # (C, T, S)
            idx2 = z["split_idx2"].astype(np.intp)
            thresh = z["split_thresh"]  # (C, T, S) float32
            leaves = z["leaf_values"]  # (C, T, S+1, 2L) float32
            self.anchor = z["anchor_idx"].astype(np.intp)  # (C, P)
            deltas = z["deltas"]  # (C, P, 2) float32
        c, t, s = idx1.shape
        if (s + 1) & s:
            raise InvalidArgument(f"{npz_path}: trees of {s} splits are not complete")
        self.n_trees = t
        # A tree's leaf is a function of its split outcomes, the same for every tree: tabulate it
        # over all 2**s outcome masks so evaluating 500 trees is one gather, not a walk per level.
        masks = np.arange(1 << s, dtype=np.int64)
        node = np.zeros_like(masks)
        while True:
            inner = node < s
            if not inner.any():
                break
            bit = (masks >> np.where(inner, node, 0)) & 1
            node = np.where(inner, 2 * node + 2 - bit, node)
        self.leaf_of_mask = (node - s).astype(np.intp)
        self.pow2 = (1 << np.arange(s)).astype(np.float32)
        self.leaf_base = np.arange(t, dtype=np.intp) * (s + 1)
        # per cascade: split pixel pairs, thresholds and leaf vectors flattened over trees
        self._flat = [
            (
                idx1[i].reshape(-1),
                idx2[i].reshape(-1),
                # features are integers, so f1 - f2 > t  <=>  f1 - f2 > floor(t)
                np.clip(np.floor(thresh[i].reshape(-1)), -512, 512).astype(np.int16),
                np.ascontiguousarray(leaves[i].reshape(t * (s + 1), -1)),
            )
            for i in range(c)
        ]
        self.n_splits = s
        # The similarity initial_shape -> current shape is [[a, -b], [b, a]] with
        # (a, b) = current_flat @ sim_basis / var (the initial shape's centred coordinates).
        init = self.initial.astype(np.float64)
        cen = init - init.mean(axis=0)
        self.sim_basis = np.stack(
            [cen.reshape(-1), np.stack([-cen[:, 1], cen[:, 0]], 1).reshape(-1)], 1
        )
        self.sim_basis /= (cen * cen).sum()
        self.deltas_t = np.ascontiguousarray(deltas.transpose(0, 2, 1))  # (C, 2, P): dx; dy
        self.deltas_perp = np.ascontiguousarray(
            np.stack([-deltas[:, :, 1], deltas[:, :, 0]], axis=1)
        )  # (C, 2, P): -dy; dx

    @property
    def num_parts(self) -> int:
        return len(self.initial)

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 5, 2) float32 landmarks in image pixels for the (N, 4) float boxes of one image."""
        img = _check_image(image_bgr)
        boxes = np.asarray(boxes, np.float64)
        if boxes.size == 0:
            return np.zeros((0, self.num_parts, 2), np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise InvalidArgument(f"boxes must be finite (N, 4), got shape {boxes.shape}")
        rects = boxes_to_dlib_rects(boxes)
        n = len(rects)
        h, w = img.shape[:2]
        # dlib's unnormalizing_tform: the unit square onto the rect's corner pixels.
        origin = rects[:, :2, None]  # (N, 2, 1)
        extent = (rects[:, 2:] - rects[:, :2])[:, :, None]
        limit = np.array([w, h], np.float64)[None, :, None]
        flat = img.reshape(-1, 3)
        shape = np.repeat(self.initial.T[None], n, axis=0)  # (N, 2, L) float32: x row, y row
        for c, (i1, i2, th, lv) in enumerate(self._flat):
            # similarity initial -> current, then cast to float32 as dlib does
            ab = (shape.transpose(0, 2, 1).reshape(n, -1) @ self.sim_basis).astype(np.float32)
            a = ab[:, 0, None, None]
            b = ab[:, 1, None, None]
            # float32 as dlib: tform * delta + anchor landmark ((a dx - b dy), (b dx + a dy))
            p = a * self.deltas_t[c] + b * self.deltas_perp[c] + shape.take(self.anchor[c], axis=2)
            xy = np.floor(origin + extent * p + 0.5)  # float64: nearest pixel
            inside = ((xy >= 0) & (xy < limit)).all(axis=1)  # (N, P)
            pos = np.where(inside, xy[:, 1] * w + xy[:, 0], 0).astype(np.intp)
            bgr = flat.take(pos, axis=0).astype(np.int16)
            grey = (bgr[..., 0] + bgr[..., 1] + bgr[..., 2]) // 3  # dlib's rgb -> grey
            feat = np.where(inside, grey, 0)  # (N, P) int16
            go_left = (feat.take(i1, axis=1) - feat.take(i2, axis=1)) > th  # (N, T*S)
            mask = go_left.reshape(n * self.n_trees, self.n_splits).astype(np.float32) @ self.pow2
            leaf = self.leaf_of_mask.take(mask.astype(np.intp)).reshape(n, self.n_trees)
            values = lv.take(leaf + self.leaf_base, axis=0)  # (N, T, 2L)
            # dlib adds the trees one after another in float32: accumulate, don't pairwise-sum.
            acc = np.concatenate([shape.transpose(0, 2, 1).reshape(n, 1, -1), values], axis=1)
            total = np.add.accumulate(acc, axis=1, dtype=np.float32)[:, -1]  # (N, 2L)
            shape = total.reshape(n, -1, 2).transpose(0, 2, 1)
        pts: np.ndarray = (origin + extent * shape.astype(np.float64)).transpose(0, 2, 1)
        return pts.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Chips


def _template(size: int, padding: float) -> np.ndarray:
    return (padding + DLIB_TEMPLATE5) / (2 * padding + 1) * size


def _dlib_chip_affine(chip_pts: np.ndarray, img_pts: np.ndarray, size: int) -> np.ndarray:
    """Chip -> image 2x3 affine of dlib's chip_details(chip_pts, img_pts, size) as sampled.

    dlib fits a similarity, keeps its angle and scale, and builds a rectangle of side size*scale
    around the image of the chip centre; the chip's corner pixels then map onto that rectangle's
    corners, so the sampling scale is (size*scale - 1) / (size - 1), not the similarity's own.
    """
    m, t = _similarity(chip_pts, img_pts)
    a, b = m[0, 0], m[1, 0]
    angle = math.atan2(b, a)
    scale = math.hypot(a, b)
    centre = m @ np.array([size / 2.0, size / 2.0]) + t
    step = (size * scale - 1) / (size - 1)
    cos, sin = math.cos(angle), math.sin(angle)
    lin = np.array([[cos, -sin], [sin, cos]]) * step
    offset = centre - lin @ np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    return np.concatenate([lin, offset[:, None]], axis=1)


def _invert(affine: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(affine[:, :2])
    return np.concatenate([lin, -lin @ affine[:, 2:]], axis=1)


def chip_transform(
    landmarks5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> np.ndarray:
    """Image -> chip 2x3 affine (OpenCV's warpAffine convention) of dlib's 5-point face chip.

    `landmarks5` are the (5, 2) points of Shape5Predictor (dlib's order). dlib itself passes its
    integer-rounded landmarks; pass `np.floor(p + 0.5)` to reproduce its chips bit for bit.
    """
    pts = np.asarray(landmarks5, np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise InvalidArgument(f"landmarks5 must be finite (5, 2), got {pts.shape}")
    if size < 2 or padding < 0:
        raise InvalidArgument("size must be >= 2 and padding >= 0")
    return _invert(_dlib_chip_affine(_template(size, padding), pts, size))


def chip_transform_from_mtcnn(
    points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> np.ndarray:
    """Image -> chip 2x3 affine putting MTCNN's 5 points where dlib's chip puts those features.

    Same geometry as chip_transform (dlib's chip_details from a least-squares similarity), fitted
    to MTCNN_TEMPLATE5 instead of dlib's landmarks, so no shape predictor is needed.
    """
    pts = np.asarray(points5, np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise InvalidArgument(f"points5 must be finite (5, 2), got {pts.shape}")
    if size < 2 or padding < 0:
        raise InvalidArgument("size must be >= 2 and padding >= 0")
    template = (padding + MTCNN_TEMPLATE5) / (2 * padding + 1) * size
    return _invert(_dlib_chip_affine(template, pts, size))


def _pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2> on a colour image: 1-4-6-4-1 filter, keep every other pixel, //256."""
    a = img.astype(np.uint16)
    nr, nc = a.shape[:2]
    oc = (nc - 3) // 2
    orr = (nr - 3) // 2
    if nr <= 8 or nc <= 8 or oc < 1 or orr < 1:
        return np.zeros((0, 0, 3), np.uint8)
    k = (1, 4, 6, 4, 1)  # sums stay below 2**16, as in dlib's uint16 arithmetic
    tmp = np.zeros((nr, oc, 3), np.uint16)
    for j in range(5):
        tmp += k[j] * a[:, j : j + 2 * oc : 2]
    out = np.zeros((orr, oc, 3), np.uint16)
    for j in range(5):
        out += k[j] * tmp[j : j + 2 * orr : 2]
    down: np.ndarray = (out // 256).astype(np.uint8)
    return down


def _rect_down(r: np.ndarray) -> np.ndarray:
    """pyramid_down<2>::rect_down of a drectangle (l, t, r, b)."""
    down: np.ndarray = r / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])
    return down


def _area(r: np.ndarray) -> float:
    w = r[2] - r[0] + 1
    h = r[3] - r[1] + 1
    return 0.0 if w <= 0 or h <= 0 else float(w * h)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib's interpolate_bilinear: black outside, double arithmetic, truncated to uint8."""
    h, w = img.shape[:2]
    left = np.floor(x)
    top = np.floor(y)
    ok = (left >= 0) & (top >= 0) & (left < w - 1) & (top < h - 1)
    idx = np.where(ok, top * w + left, 0).astype(np.intp).ravel()
    flat = img.reshape(-1, img.shape[2])
    lr = (x - left).reshape(-1, 1)
    tb = (y - top).reshape(-1, 1)
    tl = flat.take(idx, axis=0)
    tr = flat.take(idx + 1, axis=0)
    bl = flat.take(idx + w, axis=0)
    br = flat.take(idx + w + 1, axis=0)
    v = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    v *= ok.reshape(-1, 1)
    out: np.ndarray = v.astype(np.uint8).reshape(*x.shape, img.shape[2])
    return out


def _chip_rect(to_image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """dlib's chip rectangle (l, t, r, b), its centre and angle, from a chip -> image affine."""
    lin = to_image[:, :2]
    step = math.hypot(lin[0, 0], lin[1, 0])
    angle = math.atan2(lin[1, 0], lin[0, 0])
    half = (size - 1) / 2.0
    centre = lin @ np.array([half, half]) + to_image[:, 2]
    side = step * (size - 1)  # r - l of dlib's chip rectangle
    rect = np.concatenate([centre - side / 2, centre + side / 2])
    return rect, centre, angle


def pyramid_level(transform: np.ndarray, size: int = CHIP_SIZE) -> int:
    """Which of dlib's 2x pyramid levels a chip is sampled from: -1 = the image itself.

    dlib halves the source while the chip rectangle would still cover more than size*size pixels
    at the next level, i.e. when the face is more than about twice the chip's scale.
    """
    rect = _chip_rect(_invert(np.asarray(transform, np.float64).reshape(2, 3)), size)[0]
    level = -1
    while _area(_rect_down(rect)) > float(size * size):
        level += 1
        rect = _rect_down(rect)
    return level


def _extract_one(img: np.ndarray, to_image: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    rect, centre, angle = _chip_rect(to_image, size)
    level = -1
    r = rect
    while _area(_rect_down(r)) > float(size * size):
        level += 1
        r = _rect_down(r)
    src, sample = img, to_image
    if level >= 0:
        # As dlib: a pyramid of the neighbourhood of the rotated chip rectangle, grown by the
        # border each pyramid level needs; the chip is then sampled from the level whose scale
        # is closest above the chip's.
        grow = 2.0
        for _ in range(level + 1):
            grow = grow * 2 + 2
        cos, sin = math.cos(angle), math.sin(angle)
        rot = np.array([[cos, -sin], [sin, cos]])
        corners = np.array(
            [[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]]]
        )
        rc = (corners - centre) @ rot.T + centre
        lo = np.maximum(rc.min(axis=0) - grow, 0)
        hi = np.minimum(rc.max(axis=0) + grow, [w - 1, h - 1])
        bl, bt = np.floor(lo + 0.5).astype(int)
        br, bb = np.floor(hi + 0.5).astype(int)
        src = img[bt : bb + 1, bl : br + 1]
        for _ in range(level + 1):
            src = _pyramid_down(src)
            if src.size == 0:
                return np.zeros((size, size, 3), np.uint8)
        r = rect - np.array([bl, bt, bl, bt], np.float64)
        for _ in range(level + 1):
            r = _rect_down(r)
        c = np.array([(r[0] + r[2]) / 2, (r[1] + r[3]) / 2])
        tl = rot @ (np.array([r[0], r[1]]) - c) + c
        tr = rot @ (np.array([r[2], r[1]]) - c) + c
        bl_ = rot @ (np.array([r[0], r[3]]) - c) + c
        sample = np.stack([(tr - tl) / (size - 1), (bl_ - tl) / (size - 1), tl], axis=1)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = sample[0, 0] * u + sample[0, 1] * v + sample[0, 2]
    y = sample[1, 0] * u + sample[1, 1] * v + sample[1, 2]
    return _bilinear(src, x, y)


def extract_chips(
    image_bgr: np.ndarray, transforms: np.ndarray | list[np.ndarray], size: int = CHIP_SIZE
) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB chips for image -> chip 2x3 `transforms` (chip_transform).

    Reproduces dlib's extract_image_chip one chip at a time (dlib.get_face_chip); dlib's batched
    get_face_chips builds one pyramid over all faces, which only matters for faces more than twice
    the chip's scale, and then only in the pyramid's rounding.
    """
    img = _check_image(image_bgr)
    tf = np.asarray(transforms, np.float64).reshape(-1, 2, 3)
    if not np.isfinite(tf).all():
        raise InvalidArgument("transforms must be finite")
    out = np.empty((len(tf), size, size, 3), np.uint8)
    for i, t in enumerate(tf):
        out[i] = _extract_one(img, _invert(t), size)[..., ::-1]
    return out
