"""Head pose (yaw, pitch, roll) from the face mesh's own 3-D points, with no external face model.

The face-mesh model already predicts depth, so the face's orientation is read off its points
directly: a face-intrinsic frame built from landmarks, then decomposed into Baidu's angles.
  x axis: from the image-left eye to the image-right eye (means of the 8 eye contour points each,
          3-D; symmetric sets, so a frontal face gives yaw = roll = 0);
  y axis: from the top of the forehead (mesh 10) down to the mean of the nose base (2) and the
          chin (152), made orthogonal to x; half the chin only, because the chin moves with the
          jaw, the nose base does not;
  z axis: x cross y, into the head.
Pitch 0 is therefore defined by the face itself: the line from mesh 10 to the midpoint of 2 and
152 perpendicular to the optical axis. The mesh is predicted in an orthographic crop (its z has
the scale of x and y), so perspective is ignored: a face near the image border, seen obliquely,
reads as if seen head-on from its own direction.

Angles follow Baidu's v3 API, in degrees, "left"/"right"/"up"/"down" as the viewer sees them:
  yaw   [-90, 90]: negative when the nose points to the image's left, positive to its right;
  pitch [-90, 90]: negative when the face looks up, positive when it looks down;
  roll  [-180, 180]: positive when the face is turned clockwise in the image (the right eye, as
        the viewer sees it, lower than the left), negative counter-clockwise.
The face's rotation is R = Ry(yaw) Rx(pitch) Rz(roll) in camera axes (x right, y down, z into
the scene), so yaw and pitch describe where the face points and roll its tilt about that axis.
"""

from __future__ import annotations

import math

import numpy as np

from facecore.pipeline.landmarks import LEFT_EYE, RIGHT_EYE

FOREHEAD = 10  # top of the forehead, on the midline
LOWER_MIDLINE = (2, 152)  # nose base and chin: their mean is the lower end of the face's y axis


def _angles(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of rotation matrix r = Ry(yaw) Rx(pitch) Rz(roll)."""
    # The face's z axis (pointing away from the camera for a frontal face) is Ry Rx e_z
    # = (sin(yaw) cos(pitch), -sin(pitch), cos(yaw) cos(pitch)).
    zx, zy, zz = r[:, 2]
    yaw = math.atan2(zx, zz)
    pitch = math.asin(max(-1.0, min(1.0, -zy)))
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = (ry @ rx).T @ r
    roll = math.atan2(rz[1, 0], rz[0, 0])
    # A positive rotation about +y (down) turns the nose (towards -z) to the image's left, hence
    # the sign flip; one about +x turns it down, and one about +z (into the scene) is clockwise.
    return -math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def face_frame(points: np.ndarray) -> np.ndarray:
    """3x3 rotation whose columns are the face's x, y, z axes in camera axes (see module doc)."""
    p = np.asarray(points, np.float64)
    x = p[RIGHT_EYE].mean(axis=0) - p[LEFT_EYE].mean(axis=0)
    down = p[list(LOWER_MIDLINE)].mean(axis=0) - p[FOREHEAD]
    nx = np.linalg.norm(x)
    if not nx > 0:
        raise ValueError("degenerate mesh: the eyes coincide")
    x /= nx
    y = down - x * (x @ down)
    ny = np.linalg.norm(y)
    if not ny > 0:
        raise ValueError("degenerate mesh: the forehead-chin line lies along the eye line")
    y /= ny
    return np.stack([x, y, np.cross(x, y)], axis=1)


def head_pose(
    points: np.ndarray, image_size: tuple[int, int] | None = None
) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face from its (468, 3) mesh points.

    points: x, y in image pixels, z at the same scale, negative towards the camera (as
    `facecore.pipeline.landmarks.Mesh.points`). image_size (width, height) is accepted for compatibility
    and unused: the mesh is orthographic, so the camera does not enter.
    """
    del image_size
    pts = np.asarray(points, np.float64)
    if pts.shape != (468, 3):
        raise ValueError(f"points must be (468, 3) face-mesh points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or infinity")
    return _angles(face_frame(pts))


def rotation(roll: float) -> int:
    """Baidu's `location.rotation`: the face box's clockwise rotation, whole degrees."""
    return round(roll)
