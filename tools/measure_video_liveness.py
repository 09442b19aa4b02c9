"""Measure H5 video liveness on both sides, through the same decoding and scoring as the server.

    python tools/measure_video_liveness.py --models DIR [--people 30] [--offset 0] [--json out.json]

DIR is a models directory with the MiniFASNet pair installed (make models LIVENESS_MODEL_DIR=...).

False accepts: videos generated from still pictures, as an attacker holding a print or a screen
would film them. The pictures are the first image of `--people` LFW people (every n-th person in
name order, starting at `--offset`: another offset is another set of people) and the 7 images of
../shared/data/spoof. Each is put on a 640x480 grey background and
filmed for 4 s at 25 fps (mp4v) while it stays still, pans, zooms, rotates in the image plane, tilts
+-40 degrees about its vertical or horizontal axis (a true perspective warp of the flat picture), or
shakes (all of these at once). Every video also carries one of seven conditions, in turn: plain,
a large picture (past the frame's edges), a small one, motion blur (five sub-frame positions
averaged), exposure flicker (+-20%), a specular highlight sliding over the picture, and a picture
cropped tight around the face. Camera noise (sigma 2) is added to every frame.

False rejects: the two real clips of ../shared/data/video, whole and cut into windows of 2, 3 and
5 s every second (re-encoded with mp4v). Windows overlap, so they are not independent samples.

Prints the counts and rates at each returned threshold and the spec's recommended 0.393241.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from facecore.errors import FaceCoreError
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image
from facecore.pipeline.liveness import THRESHOLDS
from facecore.pipeline.video import Video, analyse, write_video

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SPEC_RECOMMENDED = 0.393241
SIZE = (640, 480)
FPS = 25.0
SECONDS = 4.0

# Picture pose over time t (seconds): keyword arguments of picture_homography.
MOTIONS: dict[str, Callable[[float], dict[str, float]]] = {
    "still": lambda t: {},
    "pan": lambda t: {
        "tx": 120 * math.sin(2 * math.pi * t / 2.5),
        "ty": 30 * math.sin(2 * math.pi * t / 1.7),
    },
    "zoom": lambda t: {"scale": 1.0 + 0.3 * math.sin(2 * math.pi * t / 2.0)},
    "rotate": lambda t: {"roll": 25 * math.sin(2 * math.pi * t / 2.0)},
    "tilt_yaw": lambda t: {"yaw": 40 * math.sin(2 * math.pi * t / 2.5)},
    "tilt_pitch": lambda t: {"pitch": 40 * math.sin(2 * math.pi * t / 2.5)},
    "shake": lambda t: {
        "tx": 40 * math.sin(7.1 * t),
        "ty": 25 * math.sin(5.3 * t),
        "roll": 8 * math.sin(3.7 * t),
        "yaw": 20 * math.sin(2.9 * t),
        "pitch": 15 * math.sin(4.3 * t),
        "scale": 1 + 0.1 * math.sin(2.3 * t),
    },
}
CONDITIONS = ("plain", "large", "small", "blur", "flicker", "glare", "cropped")


def picture_homography(
    w: int,
    h: int,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    scale: float = 1.0,
    tx: float = 0.0,
    ty: float = 0.0,
    focal: float = 800.0,
) -> np.ndarray:
    """Picture pixels -> frame pixels: the flat w x h picture rotated in 3-D about its centre,
    seen by a pinhole camera of focal length `focal` from `focal` away, then scaled and moved."""
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    flat = np.c_[corners - [w / 2, h / 2], np.zeros(4)]
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    q = flat @ (ry @ rx @ rz).T
    q[:, 2] += focal
    seen = q[:, :2] * (focal / q[:, 2:3]) * scale + [SIZE[0] / 2 + tx, SIZE[1] / 2 + ty]
    return cv2.getPerspectiveTransform(corners.astype(np.float32), seen.astype(np.float32))


def film_picture(picture: np.ndarray, motion: str, condition: str, seed: int) -> list[np.ndarray]:
    """Frames of `picture` moved by `motion` under `condition` (see the module doc)."""
    h, w = picture.shape[:2]
    fit = {"large": 1.3, "small": 0.45}.get(condition, 0.7)
    base = fit * min(SIZE[0] / w, SIZE[1] / h)
    rng = np.random.default_rng(seed)
    background = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    frames = []
    for i in range(int(SECONDS * FPS)):
        t = i / FPS
        times = [t + k / (5 * FPS) for k in range(5)] if condition == "blur" else [t]
        frame = np.zeros((SIZE[1], SIZE[0], 3), np.float64)
        for s in times:
            pose = MOTIONS[motion](s)
            pose["scale"] = pose.get("scale", 1.0) * base
            frame += cv2.warpPerspective(
                picture,
                picture_homography(w, h, **pose),
                SIZE,
                dst=background.copy(),
                borderMode=cv2.BORDER_TRANSPARENT,
            )
        frame /= len(times)
        if condition == "flicker":
            frame *= 1 + 0.2 * math.sin(2 * math.pi * t / 1.3)
        if condition == "glare":  # a highlight that moves against the picture, as a reflection does
            pose = MOTIONS[motion](t)
            gx = SIZE[0] / 2 + 60 - 2 * pose.get("tx", 0) + 6 * pose.get("yaw", 0)
            gy = SIZE[1] / 2 - 40 - 2 * pose.get("ty", 0) + 6 * pose.get("pitch", 0)
            spot = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * 30.0**2))
            frame += 120 * spot[..., None]
        frame += rng.normal(0, 2.0, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def crop_to_face(engine: Engine, picture: np.ndarray) -> np.ndarray:
    """The picture cut close around its largest face, as a print trimmed to the head."""
    faces = engine.detect(picture, 1)
    if not faces:
        return picture
    x1, y1, x2, y2 = faces[0].box
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, 0.6 * max(x2 - x1, y2 - y1)
    return picture[int(max(0, cy - 1.1 * r)) : int(cy + 1.2 * r), int(max(0, cx - r)) : int(cx + r)]


def score(engine: Engine, data: bytes) -> dict[str, Any]:
    try:
        with Video(data) as video:
            r = analyse(engine, video)
    except FaceCoreError as e:
        return {"error": e.code, "score": 0.0}
    return {
        "score": r.score,
        "image_score": r.image_score,
        "evidence": r.evidence,
        "blink": r.blink,
        "mouth": r.mouth,
        "parallax": r.parallax,
    }


def clip_windows(path: Path) -> list[tuple[str, list[np.ndarray], float]]:
    """The clip whole, and its windows of 2, 3 and 5 s starting every second."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    out = [(path.stem, frames, fps)]
    for length in (2, 3, 5):
        n, start = round(length * fps), 0.0
        while round(start * fps) + n <= len(frames):
            a = round(start * fps)
            out.append((f"{path.stem}[{start:g}+{length}s]", frames[a : a + n], fps))
            start += 1
    return out


def rates(scores: list[float], accept: bool) -> dict[str, str]:
    """For each threshold: how many scored at or over it (accept) or under it (reject)."""
    out = {}
    for name, t in [*sorted(THRESHOLDS.items(), key=lambda kv: kv[1]), ("spec", SPEC_RECOMMENDED)]:
        k = sum((s >= t) == accept for s in scores)
        out[f"{name} ({t:g})"] = f"{k} of {len(scores)} ({100 * k / len(scores):.1f}%)"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--people", type=int, default=30, help="LFW people to film (default 30)")
    ap.add_argument("--offset", type=int, default=0, help="first LFW person taken (default 0)")
    ap.add_argument("--json", type=Path, help="write every video's result here")
    a = ap.parse_args()
    engine = Engine(models_dir=a.models)
    people = sorted((DATA / "lfw" / "images").iterdir())
    step = max(1, len(people) // max(a.people, 1))
    sources = [min(p.glob("*.jpg")) for p in people[a.offset :: step][: a.people]]
    sources += sorted((DATA / "spoof").glob("*.jpg"))
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        for i, src in enumerate(sources):
            picture = decode_image(src.read_bytes())
            for j, motion in enumerate(MOTIONS):
                condition = CONDITIONS[(i + j) % len(CONDITIONS)]
                shot = crop_to_face(engine, picture) if condition == "cropped" else picture
                frames = film_picture(shot, motion, condition, seed=i * 100 + j)
                name = f"attack/{src.stem}/{motion}/{condition}"
                results[name] = score(engine, write_video(path, frames, FPS))
            print(
                f"{i + 1}/{len(sources)} pictures, {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
        for clip in sorted((DATA / "video").glob("*.mp4")):
            for name, frames, fps in clip_windows(clip):
                results[f"genuine/{name}"] = score(engine, write_video(path, frames, fps))
    attack = {k: r for k, r in results.items() if k.startswith("attack/")}
    genuine = {k: r for k, r in results.items() if k.startswith("genuine/")}
    print(f"attack videos accepted (false accepts), {len(attack)} videos:")
    for k, v in rates([r["score"] for r in attack.values()], accept=True).items():
        print(f"  {k}: {v}")
    print("  the image score alone (no motion evidence) would accept:")
    for k, v in rates([r.get("image_score", 0.0) for r in attack.values()], accept=True).items():
        print(f"    {k}: {v}")
    print(f"genuine videos rejected (false rejects), {len(genuine)} videos:")
    for k, v in rates([r["score"] for r in genuine.values()], accept=False).items():
        print(f"  {k}: {v}")
    print(f"refused with an error: {[k for k, r in results.items() if 'error' in r] or 'none'}")
    for measure in ("mouth", "parallax"):
        top = max(attack.items(), key=lambda kv: kv[1].get(measure, 0.0))
        print(f"largest attack {measure}: {top[1].get(measure, 0.0):.4f} ({top[0]})")
    print(f"attack blinks: {[k for k, r in attack.items() if r.get('blink')] or 'none'}")
    low = sorted((r["score"], k) for k, r in genuine.items())[:5]
    print("lowest genuine scores:", [(round(v, 5), k) for v, k in low])
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
