"""The face pipeline: detect, align, embed and analyse the faces of one image.

`Engine` ties the stages together; each stage batches every face of the image into one model call.
What runs depends on `fields`: detection (box, probability, 5 points, token) always; the 468-point
mesh for landmarks, angle, eye_status and expression; the aligned chip for the embedding and quality;
the age/gender chips and the emotion crop only when asked. Thread-safe: stages hold no per-call state
and the backend's sessions may run concurrently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecore.errors import InvalidArgument, InvalidType, LivenessMissing
from facecore.pipeline import quality as quality_mod
from facecore.pipeline.align import (
    Shape5Predictor,
    chip_transform,
    chip_transform_from_mtcnn,
    dlib_boxes_from_mtcnn,
    extract_chips,
)
from facecore.pipeline.attributes import (
    EMOTIONS,
    HAPPY,
    AgeGender,
    Emotion,
    emotion_crops,
    expression,
)
from facecore.pipeline.detect import MtcnnDetector
from facecore.pipeline.embed import Recognizer
from facecore.pipeline.fields import ALWAYS_KEYS, ENGINE_ALIASES, FIELDS, NAMES, served, unsupported
from facecore.pipeline.landmarks import FaceMesh, eye_open, landmark4, landmarks72, mouth_open_ratio
from facecore.pipeline.liveness import Liveness
from facecore.pipeline.pose import head_pose
from facecore.runtime.backend import Backend
from facecore.runtime.gpu import open_backend
from facecore.score import similarity_to_score

_NEEDS_MESH = {"landmark", "angle", "expression", "eye_status"}
_NEEDS_CHIP = {"embedding", "quality"}

ALIGNMENTS = ("dual", "mtcnn", "dlib5")
CHIP_SIZE = 150
CHIP_PADDING = 0.25  # the geometry dlib's recogniser was trained on


@dataclass
class Face:
    """One detected face. Values not requested through `fields` stay None."""

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 in image pixels
    probability: float
    landmarks5: (
        np.ndarray
    )  # (5, 2) detector points: eyes, nose tip, mouth corners (image-left first)
    token: str  # 32 hex chars, deterministic for (image content, box)
    landmarks72: np.ndarray | None = None
    landmark4: np.ndarray | None = None  # left eye, right eye, nose tip, mouth centre
    pose: tuple[float, float, float] | None = None  # yaw, pitch, roll in degrees
    embedding: np.ndarray | None = None  # (128,) float32, unit norm
    age: float | None = None
    gender: str | None = None
    gender_probability: float | None = None
    emotion: dict[str, float] | None = None
    expression: tuple[str, float] | None = None
    eye_status: tuple[float, float] | None = None  # left, right: probability the eye is open
    quality: dict[str, float] | None = None  # blur, illumination, completeness
    liveness: float | None = None  # 0..1, MiniFASNet pair (only with the liveness models)
    extra: dict[str, Any] = field(default_factory=dict)


def normalise_fields(fields: tuple[str, ...] | list[str] | set[str] | frozenset[str]) -> set[str]:
    out = set()
    for f in fields:
        name = NAMES.get(f) or ENGINE_ALIASES.get(f, f)
        if name not in FIELDS:
            raise InvalidArgument(f"unknown field {f!r}; supported: {', '.join(sorted(FIELDS))}")
        out.add(name)
    return out


class Engine:
    """Face detection and analysis on one machine. Construct once, share across threads."""

    def __init__(
        self,
        models_dir: str | Path | None = None,
        backend: str | Backend = "onnxruntime",
        threads: int = 1,
        min_face: int = 40,
        alignment: str = "dual",
    ) -> None:
        """`alignment` chooses how faces are aligned for the recogniser (docs/accuracy.md):
        "dual" (default) embeds two chips per face, one from dlib's 5-point predictor on the
        detector box and one from the detector's own 5 points, and averages them (LFW 99.08%);
        "mtcnn" uses the detector's points only (98.79%, one chip, no predictor: fastest);
        "dlib5" uses the predictor only (98.75%)."""
        if alignment not in ALIGNMENTS:
            raise InvalidArgument(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.alignment = alignment
        if isinstance(backend, str):
            # "onnxruntime", "cuda", "tensorrt", "torch" (the GPU engine on the CPU) or "auto".
            self.backend: Backend = open_backend(
                backend, Path(models_dir) if models_dir is not None else None, threads=threads
            )
        else:
            self.backend = backend
        self.detector = MtcnnDetector(self.backend, min_face=min_face)
        self.shape5 = Shape5Predictor(self.backend.path("shape5")) if alignment != "mtcnn" else None
        self.recognizer = Recognizer(self.backend)
        self.mesh = FaceMesh(self.backend)
        self.age_gender = AgeGender(self.backend)
        self.emotion = Emotion(self.backend)
        # User-supplied (facecore.convert.minifasnet): None when not installed.
        self.liveness = Liveness(self.backend) if Liveness.available(self.backend) else None

    def detect(
        self,
        image_bgr: np.ndarray,
        max_faces: int = 1,
        fields: tuple[str, ...] | list[str] | set[str] | frozenset[str] = (),
    ) -> list[Face]:
        """Faces of `image_bgr` (HxWx3 uint8 BGR), largest first, at most `max_faces`."""
        if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
            raise InvalidType("image_bgr must be a uint8 numpy array (decode with decode_image)")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise InvalidArgument(f"image_bgr must be HxWx3, got shape {image_bgr.shape}")
        if not isinstance(max_faces, int) or max_faces < 1:
            raise InvalidArgument(f"max_faces must be a positive int, got {max_faces!r}")
        wanted = normalise_fields(fields)
        if "liveness" in wanted and self.liveness is None:
            raise LivenessMissing()
        image = np.ascontiguousarray(image_bgr)

        det = self.detector.detect(image)
        n = min(len(det), max_faces)
        if n == 0:
            return []
        boxes, scores, points = det.boxes[:n], det.scores[:n], det.points[:n]
        digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        faces = [
            Face(
                box=boxes[i].astype(np.float32),
                probability=float(scores[i]),
                landmarks5=points[i].astype(np.float32),
                token=_token(digest, boxes[i]),
            )
            for i in range(n)
        ]
        h, w = image.shape[:2]

        if wanted & _NEEDS_MESH:
            mesh = self.mesh.predict(image, boxes, points)
            if "landmark" in wanted:
                l72, l4 = landmarks72(mesh), landmark4(mesh)
                for i, f in enumerate(faces):
                    f.landmarks72, f.landmark4 = l72[i], l4[i]
            if "angle" in wanted:
                for i, f in enumerate(faces):
                    f.pose = head_pose(mesh.points[i], (w, h))
            if "eye_status" in wanted:
                eyes = eye_open(mesh)
                for i, f in enumerate(faces):
                    f.eye_status = (float(eyes[i, 0]), float(eyes[i, 1]))
            mouth = mouth_open_ratio(mesh) if "expression" in wanted else None
        else:
            mouth = None

        # dlib-style 5-point landmarks (the age/gender models and the recogniser were trained on
        # chips cut from them); with alignment="mtcnn" the detector's points stand in for them.
        shapes = None
        if wanted & (_NEEDS_CHIP | {"age", "gender"}) and self.shape5 is not None:
            shapes = self.shape5.predict(image, dlib_boxes_from_mtcnn(boxes))

        def transforms(size: int, padding: float) -> np.ndarray:
            if shapes is None:
                return np.stack([chip_transform_from_mtcnn(p, size, padding) for p in points])
            return np.stack([chip_transform(s, size, padding) for s in shapes])

        if wanted & _NEEDS_CHIP:
            chips = extract_chips(image, transforms(CHIP_SIZE, CHIP_PADDING), CHIP_SIZE)
            if "embedding" in wanted:
                if self.alignment == "dual":
                    second = extract_chips(
                        image,
                        np.stack(
                            [chip_transform_from_mtcnn(p, CHIP_SIZE, CHIP_PADDING) for p in points]
                        ),
                        CHIP_SIZE,
                    )
                    both = self.recognizer.embed(np.concatenate([chips, second]))
                    emb = both[:n] + both[n:]
                    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
                else:
                    emb = self.recognizer.embed(chips)
                for i, f in enumerate(faces):
                    f.embedding = emb[i]
            if "quality" in wanted:
                blur = quality_mod.blur(chips)
                light = quality_mod.illumination(chips)
                whole = quality_mod.completeness(boxes, w, h)
                for i, f in enumerate(faces):
                    f.quality = {
                        "blur": float(blur[i]),
                        "illumination": float(light[i]),
                        "completeness": int(whole[i]),
                    }
        if wanted & {"age", "gender"}:
            age_chips = extract_chips(image, transforms(64, 0.2), 64)
            gender_chips = extract_chips(image, transforms(32, 0.2), 32)
            ag = self.age_gender.predict(age_chips, gender_chips)
            for i, f in enumerate(faces):
                if "age" in wanted:
                    f.age = float(ag.ages[i])
                if "gender" in wanted:
                    f.gender, f.gender_probability = ag.genders[i], float(ag.gender_probs[i])
        if "liveness" in wanted:
            assert self.liveness is not None
            for f, score in zip(faces, self.liveness.predict(image, boxes)):
                f.liveness = float(score)
        if wanted & {"emotion", "expression"}:
            probs = self.emotion.predict(emotion_crops(image, boxes))
            for i, f in enumerate(faces):
                if "emotion" in wanted:
                    f.emotion = {name: float(p) for name, p in zip(EMOTIONS, probs[i])}
                if "expression" in wanted:
                    assert mouth is not None
                    top = int(np.argmax(probs[i])) == HAPPY
                    f.expression = expression(float(probs[i][HAPPY]), float(mouth[i]), top)
        return faces

    def capabilities(self) -> dict[str, Any]:
        """What this engine can compute: Baidu face_field names, quality parts, and what it cannot."""
        return {
            "face_field": served(self.liveness is not None),
            "always": list(ALWAYS_KEYS),
            "quality": ["blur", "illumination", "completeness"],
            "emotion": list(EMOTIONS),
            "embedding_dim": 128,
            "liveness": self.liveness is not None,
            "unsupported": unsupported(self.liveness is not None),
        }

    def compare(self, a: Face, b: Face) -> float:
        """Similarity score 0..100 of two faces detected with the "embedding" field (80 = FAR 1e-4)."""
        if a.embedding is None or b.embedding is None:
            raise InvalidArgument("compare needs faces detected with fields=('embedding',)")
        return float(similarity_to_score(float(np.dot(a.embedding, b.embedding))))


def _token(image_digest: bytes, box: np.ndarray) -> str:
    rounded = np.round(np.asarray(box, dtype=np.float64), 1).tobytes()
    return hashlib.blake2b(image_digest + rounded, digest_size=16).hexdigest()
