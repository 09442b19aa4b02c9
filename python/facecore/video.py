"""Video liveness (the spec's H5 route): image liveness over frames, plus motion cues.

The video is decoded with OpenCV and read at up to SAMPLE_FPS frames a second. In each frame, the
largest face is found and its eye opening and head pose are measured. Up to LIVENESS_FRAMES of those
frames, spread evenly, are scored by the image liveness models.

The score is the median of those image scores, weighted by motion evidence:
    score = image_score * (0.5 + 0.5 * evidence)
`evidence` is 1 when a blink is seen: both eyes under CLOSED in one frame, and over OPEN in another.
Otherwise it is the head's yaw/pitch range over MOTION_FULL degrees, capped at 1. A still picture
held to the camera (no blink, no motion) keeps at most half its image score. A live face that
blinks or turns keeps all of it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from facecore.engine import Engine, Face
from facecore.errors import FaceCoreError
from facecore.liveness import LivenessMissing

MAX_SECONDS = 20.0
SAMPLE_FPS = 12.5  # frames a second examined for blinks and head motion
LIVENESS_FRAMES = 8  # frames scored by the image liveness models
CLOSED, OPEN = 0.3, 0.7  # eye-open probability of a closed / an open eye
MOTION_FULL = 6.0  # degrees of yaw or pitch range that count as full motion evidence


@dataclass
class TrackedFrame:
    index: int  # frame number in the video
    image: np.ndarray  # BGR
    face: Face
    liveness: float | None = None


@dataclass
class VideoLiveness:
    score: float
    image_score: float  # median image liveness of the scored frames
    blink: bool
    motion_degrees: float  # largest of the yaw and pitch ranges (5th to 95th percentile)
    frames: list[TrackedFrame]  # every sampled frame with a face
    sampled: int
    duration: float  # seconds

    def best(self, n: int = 2) -> list[TrackedFrame]:
        """The `n` scored frames with the highest liveness, in video order."""
        scored = [f for f in self.frames if f.liveness is not None]
        top = sorted(scored, key=lambda f: -(f.liveness or 0.0))[:n]
        return sorted(top, key=lambda f: f.index)


def read_frames(data: bytes, max_seconds: float = MAX_SECONDS) -> tuple[list[tuple[int, np.ndarray]], float]:
    """Frames sampled at up to SAMPLE_FPS, and the duration in seconds. 222203 for anything OpenCV
    cannot decode or that has no frame; 222304 for a video longer than `max_seconds`."""
    fd, path = tempfile.mkstemp(suffix=".video")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                raise FaceCoreError("not a video that can be decoded (mp4/h264 expected)", 222203)
            fps = cap.get(cv2.CAP_PROP_FPS)
            if not 1 <= fps <= 240:
                raise FaceCoreError(f"the video reports {fps:g} frames a second", 222203)
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            if count > 0 and count / fps > max_seconds:
                raise FaceCoreError(
                    f"the video lasts {count / fps:.1f} s; the limit is {max_seconds:g} s", 222304
                )
            step = max(1, round(fps / SAMPLE_FPS))
            limit = int(max_seconds * fps) + 1  # the header may lie about the length
            frames: list[tuple[int, np.ndarray]] = []
            index = 0
            while cap.grab():
                if index >= limit:
                    raise FaceCoreError(f"the video lasts over {max_seconds:g} s", 222304)
                if index % step == 0:
                    ok, frame = cap.retrieve()
                    if ok and frame is not None and frame.ndim == 3:
                        frames.append((index, frame))
                index += 1
        finally:
            cap.release()
    finally:
        os.unlink(path)
    if not frames:
        raise FaceCoreError("the video has no decodable frame", 222203)
    return frames, index / fps


def analyse(engine: Engine, frames: list[tuple[int, np.ndarray]], duration: float) -> VideoLiveness:
    if engine.liveness is None:
        raise LivenessMissing()
    tracked = []
    for index, image in frames:
        faces = engine.detect(image, 1, ("eye_status", "angle"))
        if faces:
            tracked.append(TrackedFrame(index, image, faces[0]))
    if not tracked:
        raise FaceCoreError(f"no face in any of the {len(frames)} sampled frames", 222202)
    picks = np.unique(np.linspace(0, len(tracked) - 1, min(LIVENESS_FRAMES, len(tracked))).round())
    for i in picks.astype(int):
        t = tracked[i]
        t.liveness = float(engine.liveness.predict(t.image, t.face.box[None])[0])
    image_score = float(np.median([t.liveness for t in tracked if t.liveness is not None]))
    eyes = np.array([min(t.face.eye_status) for t in tracked if t.face.eye_status is not None])
    blink = bool(len(eyes) and eyes.min() < CLOSED and eyes.max() > OPEN)
    poses = np.array([t.face.pose[:2] for t in tracked if t.face.pose is not None])
    motion = 0.0
    if len(poses) > 1:
        spread = np.percentile(poses, 95, axis=0) - np.percentile(poses, 5, axis=0)
        motion = float(spread.max())
    evidence = 1.0 if blink else min(1.0, motion / MOTION_FULL)
    score = image_score * (0.5 + 0.5 * evidence)
    return VideoLiveness(score, image_score, blink, motion, tracked, len(frames), duration)
