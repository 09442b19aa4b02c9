"""Video liveness (the spec's H5 route): a video is checked before it is decoded, decoded as a
stream within a budget, and scores only when the face in it moves as only a live face can.

Before any frame is decoded (`Video`): the container must be MP4/QuickTime or WebM/Matroska by its
magic bytes (a JPEG or PNG sent as a video is named as such); the frame size the container declares
is read here, before OpenCV opens the file, because FFmpeg may decode a frame while it probes; then
the codec, frame rate, size and length OpenCV reports are checked. ImageUnreadable for what is not a
usable video (not one, undecodable, shorter than MIN_SECONDS), ImageTooLarge for what is over a
budget (frames over min(max_pixels, 1920x1080), longer than max_seconds, more than
MAX_DECODED_PIXELS in all).

Frames are streamed: each sampled frame (SAMPLE_FPS a second, shrunk to ANALYSIS_SIDE) is analysed
as it is read and dropped. A request holds the frame in hand, three grey frames for the tracker and
at most two kept pictures, whatever the video's length (docs/liveness.md gives the bound).

`analyse` finds the largest face of each sampled frame (eye opening, pose, 72 landmarks) and scores
its image liveness LIVENESS_FPS times a second. The score is
    score = image_score * evidence
where image_score is the median image liveness and evidence, in [0, 1], the strongest of three
signs that a flat picture cannot give, however it is moved in front of the camera:
- a mouth that opens and shuts (the user speaks the session code): the range of the inner-lip gap
  over the face's height within one track, counted only if the lips come together;
- parallax: points inside the face are tracked over windows of about a second, and a homography is
  fitted from their start to their end positions. A picture panned, rotated, zoomed or tilted moves
  by a homography; a head that turns does not. The second-largest window's 90th-percentile residual
  over the face's width is scored;
- a blink: the mesh's eye opening goes from open to closed within one track, and the eye's aspect
  ratio, taken relative to the face's own height/width ratio, falls with it (a picture tilted away
  from the camera squashes the eyes and the face alike).
Without any of them the evidence, and so the score, is 0: a still, a photo moved in front of the
camera, or a replayed clip without live motion scores under every threshold. The limits were set
on generated attack videos and the real clips (tools/measure_video_liveness.py, docs/liveness.md).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from facecore.errors import ImageTooLarge, ImageUnreadable, LivenessMissing, NoFace
from facecore.pipeline.engine import Engine, Face
from facecore.pipeline.image import DEFAULT_MAX_PIXELS

MAX_SECONDS = 20.0
MIN_SECONDS = 2.0  # below this there is no room for a blink or a head turn (the spec asks 5-15 s)
MIN_FRAMES = 10  # decoded frames: a still image wrapped as a 1-frame "video" is not one
MAX_FRAME_PIXELS = 1920 * 1080  # ImageTooLarge's spec text: "ensure the size is under 1920x1080"
MAX_DECODED_PIXELS = int(MAX_SECONDS * 60 * MAX_FRAME_PIXELS)  # 20 s of 1080p at 60 fps
DECODE_THREADS = 1  # FFmpeg holds a frame per decoding thread: one keeps its memory bounded
CODECS = {  # OpenCV's CAP_PROP_FOURCC for the codecs phones and browsers record
    b"h264": "H.264",
    b"hevc": "H.265",
    b"FMP4": "MPEG-4 Part 2",
    b"VP80": "VP8",
    b"VP90": "VP9",
}
SAMPLE_FPS = 12.5  # frames a second examined for motion and blinks
LIVENESS_FPS = 2.0  # frames a second scored by the image liveness models
ANALYSIS_SIDE = 960  # longer side a sampled frame is shrunk to: a face needs no more
CLOSED, OPEN = 0.3, 0.7  # eye-open probability of a closed / an open eye
BLINK_RATIO = 0.6  # a blink's relative eye aspect ratio, against the track's open eyes
MOUTH_MIN, MOUTH_FULL = 0.08, 0.12  # range of the mouth's opening (face heights): no / full
MOUTH_SHUT = 0.06  # the opening a moving mouth must come down to (5th percentile of the track)
PARALLAX_MIN, PARALLAX_FULL = 0.04, 0.06  # non-planar residual (face widths): no / full evidence
MIN_TRACK = 5  # frames a track needs before its mouth range counts

_IMAGES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
}
_EXPECTED = f"an MP4 (H.264) or WebM recording of {MIN_SECONDS:g} to {MAX_SECONDS:g} s is expected"


def not_a_video(message: str) -> ImageUnreadable:
    return ImageUnreadable(f"{message}: {_EXPECTED}")


def container(data: bytes) -> str:
    """The container by its magic bytes: "mp4" (ISO BMFF: MP4, QuickTime, 3GP) or "matroska"
    (WebM, MKV); ImageUnreadable for anything else, naming an image format when it is one."""
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"):
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise not_a_video("the video is a WebP image, not a video")
    for magic, name in _IMAGES.items():
        if data.startswith(magic):
            raise not_a_video(f"the video is {name}, not a video")
    raise not_a_video("not a video container this server reads (MP4/QuickTime or WebM/Matroska)")


# ------------------------------------------------------------------ declared frame sizes


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO BMFF boxes in data[start:end]: (type, body start, body end); a truncated box ends."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return
        yield kind, pos + head, min(pos + size, end)
        pos += size


def _mp4_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every video sample entry (moov/trak/mdia/minf with a vmhd)."""
    out = []

    def children(start: int, end: int, kind: bytes) -> Iterator[tuple[int, int]]:
        return ((a, b) for k, a, b in _boxes(data, start, end) if k == kind)

    for moov in children(0, len(data), b"moov"):
        for trak in children(*moov, b"trak"):
            for mdia in children(*trak, b"mdia"):
                for minf in children(*mdia, b"minf"):
                    if not any(True for _ in children(*minf, b"vmhd")):
                        continue  # not a video track
                    for stbl in children(*minf, b"stbl"):
                        for a, b in children(*stbl, b"stsd"):
                            # stsd: version/flags, entry count, then the sample entries, whose
                            # width and height lie 24 bytes into a VisualSampleEntry's body
                            for _, ea, eb in _boxes(data, a + 8, b):
                                if eb - ea >= 28:
                                    out.append(struct.unpack_from(">HH", data, ea + 24))
    return out


def _vint(data: bytes, pos: int, marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at pos: (value, length); with `marker` it is kept (IDs)."""
    first = data[pos]
    length = 9 - first.bit_length()
    if length > 8:
        raise ValueError("invalid EBML integer")
    value = first if marker else first & (0xFF >> length)
    for b in data[pos + 1 : pos + length]:
        value = value << 8 | b
    if pos + length > len(data):
        raise ValueError("truncated EBML integer")
    return value, length


def _elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """EBML elements in data[start:end]: (id, body start, body end); unknown sizes run to `end`."""
    pos = start
    while pos < end:
        ident, n = _vint(data, pos, marker=True)
        size, m = _vint(data, pos + n, marker=False)
        body = pos + n + m
        stop = end if size == (1 << (7 * m)) - 1 else min(body + size, end)
        yield ident, body, stop
        pos = stop


def _matroska_sizes(data: bytes) -> list[tuple[int, int]]:
    """(PixelWidth, PixelHeight) of every track's Video element (Segment/Tracks/TrackEntry)."""
    segment, tracks, entry, video, width, height = (
        0x18538067, 0x1654AE6B, 0xAE, 0xE0, 0xB0, 0xBA
    )  # fmt: skip
    out = []
    for sid, sa, sb in _elements(data, 0, len(data)):
        if sid != segment:
            continue
        for tid, ta, tb in _elements(data, sa, sb):
            if tid != tracks:
                continue
            entries = [(a, b) for k, a, b in _elements(data, ta, tb) if k == entry]
            for vid, va, vb in (v for a, b in entries for v in _elements(data, a, b)):
                if vid == video:
                    dims = {
                        k: int.from_bytes(data[a:b], "big") for k, a, b in _elements(data, va, vb)
                    }
                    out.append((dims.get(width, 0), dims.get(height, 0)))
            return out  # the first Tracks element holds them all
    return out


def declared_sizes(data: bytes, kind: str) -> list[tuple[int, int]]:
    """Frame sizes the container declares, read without FFmpeg; [] when it declares none that
    can be read (then OpenCV's report after opening is the first check)."""
    try:
        return _mp4_sizes(data) if kind == "mp4" else _matroska_sizes(data)
    except (ValueError, IndexError, struct.error):
        return []


# ------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int  # as the header says; 0 when it does not say


class Video:
    """A video checked before decoding; `frames()` streams its sampled frames.

    Use as a context manager (the bytes go to a temporary file, which FFmpeg reads):
        with Video(data, max_pixels) as video:
            for index, frame in video.frames(): ...
    """

    def __init__(
        self,
        data: bytes,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_seconds: float = MAX_SECONDS,
        max_decoded_pixels: int = MAX_DECODED_PIXELS,
    ) -> None:
        self.max_frame_pixels = min(max_pixels, MAX_FRAME_PIXELS)
        self.max_seconds = max_seconds
        self.max_decoded_pixels = max_decoded_pixels
        self.kind = container(data)
        for w, h in declared_sizes(data, self.kind):
            self._check_size(w, h)
        self.data: bytes | None = data
        self.path = ""
        self.cap: cv2.VideoCapture | None = None
        self.decoded = 0  # frames decoded so far
        self.sampled = 0  # of which analysed

    def __enter__(self) -> Video:  # noqa: PYI034 (final in practice)
        fd, self.path = tempfile.mkstemp(suffix=".video")
        try:
            with os.fdopen(fd, "wb") as f:
                assert self.data is not None
                f.write(self.data)
            self.data = None  # the caller holds the bytes; we need only the file now
            self.cap = cv2.VideoCapture(
                self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
            )
            self.info = self._check_stream(self.cap)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
        if self.path:
            os.unlink(self.path)
            self.path = ""

    def _check_size(self, w: int, h: int) -> None:
        limit = self.max_frame_pixels
        if w * h > limit:
            video = " (1920x1080)" if limit == MAX_FRAME_PIXELS else ""
            raise ImageTooLarge(
                f"the video's frames are {w}x{h} = {w * h:,} pixels; the limit is {limit:,}{video}"
            )

    def _check_stream(self, cap: cv2.VideoCapture) -> VideoInfo:
        if not cap.isOpened():
            raise not_a_video("the video cannot be decoded")
        tag = (int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little")
        if tag not in CODECS:
            raise not_a_video(
                f"the video's codec ({tag.decode('latin-1').strip(chr(0))!r}) is not one of "
                + ", ".join(CODECS.values())
            )
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w <= 0 or h <= 0:
            raise not_a_video("the video states no frame size")
        self._check_size(w, h)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not 1 <= fps <= 240:
            raise not_a_video(f"the video reports {fps:g} frames a second")
        count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))  # FFmpeg's estimate; may be 0
        if count:
            self._check_length(count, fps)
            if count * w * h > self.max_decoded_pixels:
                raise ImageTooLarge(
                    f"the video has {count} frames of {w}x{h}: more than "
                    f"{self.max_decoded_pixels / 1e6:,.0f} megapixels to decode"
                )
        return VideoInfo(self.kind, CODECS[tag], w, h, fps, count)

    def _check_length(self, frames: int, fps: float) -> None:
        seconds = frames / fps
        if seconds > self.max_seconds:
            raise ImageTooLarge(
                f"the video lasts {seconds:.1f} s; the limit is {self.max_seconds:g} s"
            )
        if seconds < MIN_SECONDS or frames < MIN_FRAMES:
            raise not_a_video(f"the video is {seconds:.2f} s long ({frames} frames)")

    @property
    def seconds(self) -> float:
        """Length of what has been decoded so far (all of it once `frames()` is exhausted)."""
        return self.decoded / self.info.fps

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, BGR frame) at up to SAMPLE_FPS, shrunk to at most ANALYSIS_SIDE; every
        frame is decoded (FFmpeg needs them), only the sampled ones converted. Raises ImageTooLarge
        when the video turns out longer or larger than the header said, ImageUnreadable when it is
        shorter than MIN_SECONDS or has no frame."""
        cap, info = self.cap, self.info
        assert cap is not None, "use Video as a context manager"
        step = max(1, round(info.fps / SAMPLE_FPS))
        limit = int(self.max_seconds * info.fps) + 1  # the header may lie about the length
        pixels, budget = info.width * info.height, self.max_decoded_pixels
        while cap.grab():
            if self.decoded >= limit:
                raise ImageTooLarge(f"the video lasts over {self.max_seconds:g} s")
            if (self.decoded + 1) * pixels > budget:
                raise ImageTooLarge(
                    f"the video holds more than {budget / 1e6:,.0f} megapixels to decode"
                )
            index = self.decoded
            self.decoded += 1
            if index % step:
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None or frame.ndim != 3:
                continue
            h, w = frame.shape[:2]
            if w * h > pixels:  # the stream grew past what it declared
                self._check_size(w, h)
                pixels = w * h
            self.sampled += 1
            yield index, shrink(frame)
        if self.decoded == 0:
            raise not_a_video("the video has no decodable frame")
        self._check_length(self.decoded, info.fps)


def shrink(frame: np.ndarray, side: int = ANALYSIS_SIDE) -> np.ndarray:
    h, w = frame.shape[:2]
    if max(h, w) <= side:
        return frame
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    out: np.ndarray = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return out


# ------------------------------------------------------------------ motion evidence

_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)


def _klt(
    a: np.ndarray, b: np.ndarray, points: np.ndarray, guess: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal KLT of `points` (N, 1, 2) from image a to b: (positions, found mask). With a
    `guess`, a refinement: it starts from the guess on an image already warped to match, so only
    what the homography does not explain is left to find (a small window, one level)."""
    if guess is None:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            a, b, points, None, winSize=(21, 21), maxLevel=3, criteria=_CRITERIA
        )
    else:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            a, b, points, guess.copy(), winSize=(15, 15), maxLevel=1, criteria=_CRITERIA,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        )  # fmt: skip
    return np.asarray(moved, np.float32), np.asarray(status).reshape(-1) == 1


WINDOW_STEPS = 12  # sampled frames a parallax window spans (about one second)
MIN_STEPS = 2  # a window cut short (a scene cut, the face lost) still counts from this
MIN_POINTS = 20  # tracked points a window needs
MAX_POINTS = 200


def normalised_grey(frame: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    """Grey frame with local mean and contrast removed (uint8, 128 = the local mean), so tracking
    survives exposure changes, flicker and a highlight sliding over a print: KLT assumes constant
    brightness, and a brightness change it cannot follow reads as non-planar motion."""
    g = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    d = g - cv2.GaussianBlur(g, (0, 0), sigma)
    spread = np.sqrt(cv2.GaussianBlur(d * d, (0, 0), sigma)) + 4.0
    out: np.ndarray = np.clip(d / spread * 48 + 128, 0, 255).astype(np.uint8)
    return out


def _face_mask(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """The face inside its landmarks' hull, shrunk 15% about its centre: no hair, no background."""
    hull = cv2.convexHull(landmarks.astype(np.float32)).reshape(-1, 2)
    centre = landmarks.mean(axis=0)
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, ((hull - centre) * 0.85 + centre).round().astype(np.int32), 255)
    return mask


def _step(
    first: np.ndarray,
    prev: np.ndarray,
    gray: np.ndarray,
    start: np.ndarray,
    points: np.ndarray,
    size: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Track `points` (N, 1, 2), which were at `start` in the window's first frame, from prev to
    gray: (kept mask, new positions), or None when the tracking broke (a scene cut, the face lost).

    Pyramidal KLT chained frame to frame drifts by a fraction of a pixel a step, more when a
    picture rotates or zooms (its translational window slides along edges), and the drift would
    read as parallax. So KLT only predicts: a homography is fitted from the start positions to the
    predicted ones, the first frame is warped by it, and each point is refined against that warped
    first frame. A flat picture leaves nothing to refine and nothing accumulates. Points the
    refinement loses (occluded, or changed past recognition) are dropped."""
    moved, ok = _klt(prev, gray, points)
    if ok.sum() < MIN_POINTS:
        return None
    h, _ = cv2.findHomography(start[ok], moved[ok], cv2.RANSAC, 0.01 * size)
    if h is None:
        return None
    predicted = cv2.perspectiveTransform(start.astype(np.float64), h).astype(np.float32)
    if (np.linalg.norm(predicted[ok] - moved[ok], axis=2) > 0.05 * size).mean() > 0.5:
        return None  # a scene cut scatters the points; parallax moves them a few percent
    warped = cv2.warpPerspective(first, h, (gray.shape[1], gray.shape[0]))
    guess = np.where(ok[:, None, None], moved, predicted)
    refined, found = _klt(warped, gray, predicted, guess)
    back, returned = _klt(gray, warped, refined, predicted)
    # forward-backward check: a point that does not come back to where it started was lost
    kept = ok & found & returned & (np.linalg.norm(back - predicted, axis=2)[:, 0] < 0.3)
    if kept.sum() < MIN_POINTS:
        return None
    return kept, refined[kept]


def nonplanar(start: np.ndarray, end: np.ndarray, size: float) -> float:
    """90th percentile distance, in units of `size`, of points' end positions from where the best
    homography from their start positions puts them: ~0 for a flat picture however it moved."""
    h, _ = cv2.findHomography(start, end, cv2.RANSAC, 0.01 * size)
    if h is None:
        return 0.0
    fitted = cv2.perspectiveTransform(start.reshape(-1, 1, 2).astype(np.float64), h)
    residual = np.linalg.norm(fitted.reshape(-1, 2) - end.reshape(-1, 2), axis=1)
    return float(np.percentile(residual, 90)) / size


@dataclass
class _Parallax:
    """Parallax windows over the sampled frames of one video (see the module doc)."""

    windows: list[float] = field(default_factory=list)  # each window's largest nonplanar()
    prev: np.ndarray | None = None  # grey previous sampled frame
    first: np.ndarray | None = None  # grey first frame of the window
    box: np.ndarray | None = None  # previous face box
    start: np.ndarray | None = None  # tracked points at the window's start
    points: np.ndarray | None = None  # and now
    steps: int = 0
    size: float = 0.0  # face width at the window's start, pixels
    peak: float = 0.0  # largest nonplanar() of the window so far
    tracked: int = 0  # points at the window's start

    def update(self, gray: np.ndarray, face: Face | None) -> bool:
        """Feed the next sampled frame; False when it starts a new track (no face, a jump)."""
        if face is None:
            self.close()
            self.prev = self.box = None
            return False
        continued = self.box is not None and _same_face(self.box, face.box)
        if continued and self.points is not None and self.prev is not None:
            assert self.first is not None and self.start is not None
            tracked = _step(self.first, self.prev, gray, self.start, self.points, self.size)
            if tracked is None:
                self.close()
                continued = False
            elif tracked[0].sum() < max(MIN_POINTS, self.tracked / 2):
                self.close()  # too few left to trust: the survivors of blur are the worst tracked
            else:
                kept, self.points = tracked
                self.start, self.steps = self.start[kept], self.steps + 1
                self.peak = max(self.peak, nonplanar(self.start, self.points, self.size))
                if self.steps >= WINDOW_STEPS:
                    self.close()
        else:
            self.close()
        if self.points is None:
            self._open(gray, face)
        self.prev, self.box = gray, face.box
        return continued

    def _open(self, gray: np.ndarray, face: Face) -> None:
        assert face.landmarks72 is not None
        self.size = float(face.box[2] - face.box[0])
        points = cv2.goodFeaturesToTrack(
            gray,
            MAX_POINTS,
            0.01,
            max(3.0, self.size / 30),
            mask=_face_mask(gray.shape, face.landmarks72),
        )
        if points is not None and len(points) >= MIN_POINTS:
            self.start, self.points, self.first = points.copy(), points, gray
            self.steps, self.peak, self.tracked = 0, 0.0, len(points)

    def close(self) -> None:
        """End the current window (at a break, or when the video ends), measuring it."""
        if self.points is not None and self.steps >= MIN_STEPS:
            self.windows.append(self.peak)
        self.start = self.points = self.first = None


def _same_face(prev: np.ndarray, box: np.ndarray) -> bool:
    """The box continues the previous one: no jump of half a face, no 1.5x change of size."""
    w0, w1 = float(prev[2] - prev[0]), float(box[2] - box[0])
    shift = np.hypot(*((box[:2] + box[2:]) / 2 - (prev[:2] + prev[2:]) / 2))
    return bool(shift < 0.5 * w0 and 2 / 3 < w1 / max(w0, 1e-6) < 1.5)


def eye_ratio(landmarks72: np.ndarray) -> float:
    """The lesser eye aspect ratio (lid gap over eye width, Baidu's 72-point eyes) divided by the
    face's height/width ratio (eyes to mouth over eye to eye). A picture tilted away from the
    camera squashes both alike; a blink closes the eyes alone."""
    p = landmarks72.astype(np.float64)
    ears = []
    for eye in (p[13:21], p[30:38]):  # corner, upper lid (3), corner, lower lid (3)
        gap = np.linalg.norm(eye[1] - eye[7]) + np.linalg.norm(eye[3] - eye[5])
        ears.append(gap / (2 * np.linalg.norm(eye[0] - eye[4])))
    eyes = (p[21] + p[38]) / 2
    height = np.linalg.norm(p[58:72].mean(axis=0) - eyes)
    width = np.linalg.norm(p[38] - p[21])
    return float(min(ears) / (height / width)) if height > 0 and width > 0 else 0.0


def mouth_ratio(landmarks72: np.ndarray) -> float:
    """Inner-lip gap over the face's height (eyes to mouth): speaking moves it, a picture, however
    it is tilted, squashes the gap and the height alike."""
    p = landmarks72.astype(np.float64)
    height = np.linalg.norm((p[60] + p[64]) / 2 - (p[21] + p[38]) / 2)
    return float(np.linalg.norm(p[67] - p[70]) / height) if height > 0 else 0.0


@dataclass
class _Sample:
    eye_open: float  # the mesh's lesser eye-open probability
    eye_ratio: float
    mouth_ratio: float


def blinked(tracks: list[list[_Sample]]) -> bool:
    """A blink in any track: a closed frame whose eye ratio is under BLINK_RATIO times the median
    of the track's open frames."""
    for track in tracks:
        opened = [s.eye_ratio for s in track if s.eye_open > OPEN]
        closed = [s.eye_ratio for s in track if s.eye_open < CLOSED]
        if opened and closed and min(closed) < BLINK_RATIO * float(np.median(opened)):
            return True
    return False


def mouth_range(tracks: list[list[_Sample]]) -> float:
    """How far the mouth opens and shuts: the largest 5th-95th percentile range of the mouth ratio
    within one track (per track: two people, or a scene cut, are not one mouth moving). A track
    whose mouth never shuts (5th percentile over MOUTH_SHUT) counts 0: the mesh's inner lips
    jitter on a photo of an open mouth, and speech closes the lips between syllables."""
    ranges = [0.0]
    for t in tracks:
        if len(t) >= MIN_TRACK:
            low, high = np.percentile([s.mouth_ratio for s in t], [5, 95])
            if low < MOUTH_SHUT:
                ranges.append(float(high - low))
    return max(ranges)


def _ramp(value: float, low: float, high: float) -> float:
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


# ------------------------------------------------------------------ the score


@dataclass
class Picture:
    """A frame kept for pic_list: one of the two with the highest image liveness."""

    index: int
    image: np.ndarray  # BGR, as analysed (at most ANALYSIS_SIDE)
    face: Face
    liveness: float


@dataclass
class VideoLiveness:
    score: float  # image_score * evidence
    image_score: float  # median image liveness of the scored frames
    evidence: float  # 0..1: the strongest of blink, mouth and parallax evidence
    blink: bool
    mouth: float  # mouth_range(): how far the mouth opened and closed, face heights
    parallax: float  # second-largest window's non-planar residual, face widths
    motion_degrees: float  # yaw/pitch range (5th-95th percentile); reported, not scored
    pictures: list[Picture]  # up to two, in video order
    frames_with_face: int
    sampled: int
    duration: float  # seconds


def analyse(engine: Engine, video: Video) -> VideoLiveness:
    """Stream `video`'s frames through detection, tracking and (LIVENESS_FPS a second) image
    liveness, keeping per-frame numbers and the two best pictures, never the frames."""
    live = engine.liveness
    if live is None:
        raise LivenessMissing()
    parallax = _Parallax()
    tracks: list[list[_Sample]] = []
    poses: list[tuple[float, float]] = []
    scores: list[float] = []
    best: list[Picture] = []
    next_score = 0.0
    for index, frame in video.frames():
        faces = engine.detect(frame, 1, ("eye_status", "angle", "landmark"))
        face = faces[0] if faces else None
        if not parallax.update(normalised_grey(frame), face) and face is not None:
            tracks.append([])
        if face is None:
            continue
        assert face.eye_status is not None and face.landmarks72 is not None
        lm = face.landmarks72
        tracks[-1].append(_Sample(min(face.eye_status), eye_ratio(lm), mouth_ratio(lm)))
        if face.pose is not None:
            poses.append(face.pose[:2])
        seconds = index / video.info.fps
        if seconds >= next_score:
            next_score = seconds + 1 / LIVENESS_FPS
            face.liveness = float(live.predict(frame, face.box[None])[0])
            scores.append(face.liveness)
            best.append(Picture(index, frame, face, face.liveness))
            best = sorted(best, key=lambda p: -p.liveness)[:2]
    parallax.close()
    if not scores:
        raise NoFace(f"no face in any of the {video.sampled} sampled frames")
    image_score = float(np.median(scores))
    blink = blinked(tracks)
    mouth = mouth_range(tracks)
    # The second-largest window: one window is one second of tracking, and a single bad one
    # (motion blur on a waved print) must not pass; a live head turn lasts longer.
    windows = sorted(parallax.windows)
    nonflat = windows[-2] if len(windows) > 1 else 0.0
    evidence = max(
        1.0 if blink else 0.0,
        _ramp(mouth, MOUTH_MIN, MOUTH_FULL),
        _ramp(nonflat, PARALLAX_MIN, PARALLAX_FULL),
    )
    degrees = 0.0
    if len(poses) > 1:
        p = np.array(poses)
        degrees = float((np.percentile(p, 95, axis=0) - np.percentile(p, 5, axis=0)).max())
    return VideoLiveness(
        score=image_score * evidence,
        image_score=image_score,
        evidence=evidence,
        blink=blink,
        mouth=mouth,
        parallax=nonflat,
        motion_degrees=degrees,
        pictures=sorted(best, key=lambda p: p.index),
        frames_with_face=sum(len(t) for t in tracks),
        sampled=video.sampled,
        duration=video.seconds,
    )


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> bytes:
    """Encode BGR `frames` as an MPEG-4 Part 2 mp4 at `path` and return its bytes: how the tests
    and tools/measure_video_liveness.py make the clips they send (OpenCV's own encoder, no
    FFmpeg binary needed)."""
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        out.write(f)
    out.release()
    return path.read_bytes()
