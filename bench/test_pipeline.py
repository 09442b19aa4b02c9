"""The face pipeline: per-stage latency at 1 and 2 threads, end-to-end detect+align+embed against
face_recognition's dlib pipeline in the same run, and LFW accuracy of both.

The end-to-end image is a 640x480 phone photo of one real face (../shared/data/spoof/image_T1.jpg,
upright after EXIF: 480x640). Both pipelines get the same decoded RGB/BGR array; decoding is not
timed. face_recognition runs as its users call it: HOG upsample 1, 5-point predictor, 1 jitter.
Each benchmark checks its answer: one face, and FaceCore's embedding agrees with dlib's descriptor
of the same face (cosine > 0.95).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _harness import warm_up
from _lfw import LFW, cached, reference_embeddings
from facecore.evaluation import (
    best_threshold_accuracy,
    cross_validated_accuracy,
    embed_central_faces,
    lfw_images,
    pair_similarities,
)
from facecore.pipeline.align import chip_transform, dlib_boxes_from_mtcnn, extract_chips
from facecore.pipeline.attributes import emotion_crops
from facecore.pipeline.engine import CHIP_PADDING, CHIP_SIZE, Engine
from facecore.pipeline.image import decode_image

PHOTO = LFW.parent / "spoof" / "image_T1.jpg"
THREADS = (1, 2)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    img = decode_image(PHOTO.read_bytes())
    assert img.shape[:2] == (640, 480)
    return img


_engines: dict[int, Engine] = {}


def engine(threads: int) -> Engine:
    if threads not in _engines:
        _engines[threads] = Engine(threads=threads)
    return _engines[threads]


def _time(benchmark: Any, call: Any, threads: int, **info: Any) -> Any:
    cv2.setNumThreads(threads)
    rounds = warm_up(call)
    result = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(threads=threads, rounds=rounds, **info)
    return result


@pytest.mark.parametrize("threads", THREADS)
def test_end_to_end_facecore(benchmark: Any, photo: np.ndarray, threads: int) -> None:
    eng = engine(threads)
    faces = _time(
        benchmark,
        lambda: eng.detect(photo, fields=("embedding",)),
        threads,
        kind="pipeline",
        engine="facecore",
        stage="detect+align+embed",
    )
    assert len(faces) == 1 and faces[0].embedding is not None


@pytest.mark.parametrize("threads", THREADS)
def test_end_to_end_face_recognition(benchmark: Any, photo: np.ndarray, threads: int) -> None:
    import dlib
    import face_recognition

    rgb = np.ascontiguousarray(photo[:, :, ::-1])

    def run() -> list[np.ndarray]:
        locs = face_recognition.face_locations(rgb, number_of_times_to_upsample=1, model="hog")
        encodings: list[np.ndarray] = face_recognition.face_encodings(
            rgb, locs, num_jitters=1, model="small"
        )
        return encodings

    # dlib-bin is built without a thread pool for these calls: threads only records the setting.
    enc = _time(
        benchmark,
        run,
        threads,
        kind="pipeline",
        engine="face_recognition",
        stage="detect+align+embed",
        dlib_version=dlib.__version__,
    )
    assert len(enc) == 1
    ours = engine(1).detect(photo, fields=("embedding",))[0].embedding
    assert ours is not None
    ref = enc[0] / np.linalg.norm(enc[0])
    assert float(np.dot(ours, ref)) > 0.95, "the two pipelines embed different faces"


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize(
    "stage",
    ["detect", "shape5", "chip", "embed", "mesh", "age_gender", "emotion", "quality"],
)
def test_stage(benchmark: Any, photo: np.ndarray, threads: int, stage: str) -> None:
    eng = engine(threads)
    det = eng.detector.detect(photo)
    assert len(det) == 1
    boxes, points = det.boxes, det.points
    shape5 = eng.shape5
    assert shape5 is not None
    shapes = shape5.predict(photo, dlib_boxes_from_mtcnn(boxes))
    transforms = np.stack([chip_transform(s, CHIP_SIZE, CHIP_PADDING) for s in shapes])
    chips = extract_chips(photo, transforms, CHIP_SIZE)
    calls = {
        "detect": lambda: eng.detector.detect(photo),
        "shape5": lambda: shape5.predict(photo, dlib_boxes_from_mtcnn(boxes)),
        "chip": lambda: extract_chips(photo, transforms, CHIP_SIZE),
        "embed": lambda: eng.recognizer.embed(chips),
        "mesh": lambda: eng.mesh.predict(photo, boxes, points),
        "age_gender": lambda: eng.detect(photo, fields=("age", "gender")),
        "emotion": lambda: eng.emotion.predict(emotion_crops(photo, boxes)),
        "quality": lambda: eng.detect(photo, fields=("quality",)),
    }
    out = _time(benchmark, calls[stage], threads, kind="stage", engine="facecore", stage=stage)
    # What was timed is also right: one face, and each stage's output of that face.
    checks: dict[str, Callable[[Any], bool]] = {
        "detect": lambda r: len(r) == 1,
        "shape5": lambda r: r.shape == (1, 5, 2) and np.isfinite(r).all(),
        "chip": lambda r: r.shape == (1, CHIP_SIZE, CHIP_SIZE, 3) and r.std() > 10,
        "embed": lambda r: r.shape == (1, 128) and abs(float(np.linalg.norm(r[0])) - 1) < 1e-4,
        "mesh": lambda r: len(r) == 1 and r.points.shape == (1, 468, 3) and r.score[0] > 0.5,
        "age_gender": lambda r: len(r) == 1 and r[0].age is not None and r[0].gender is not None,
        "emotion": lambda r: r.shape == (1, 7) and abs(float(r.sum()) - 1) < 1e-4,
        "quality": lambda r: len(r) == 1 and r[0].quality is not None,
    }
    assert checks[stage](out), (stage, out)


def test_lfw_accuracy(benchmark: Any) -> None:
    """Accuracy of both pipelines on pairs.txt (embeddings cached in /tmp/facecore-bench)."""
    paths = lfw_images(LFW)
    ref_emb, ref_found = cached("reference", paths, reference_embeddings)
    our_emb, our_found = cached("facecore", paths, embed_central_faces, key=_model_key())
    out: dict[str, Any] = {}
    for name, (emb, found) in {
        "face_recognition": (ref_emb, ref_found),
        "facecore": (our_emb, our_found),
    }.items():
        sims, same = pair_similarities(emb, found, paths, LFW)
        acc, thr = best_threshold_accuracy(sims, same)
        cv = cross_validated_accuracy(sims, same, np.arange(len(sims)) // 600)
        out[name] = {
            "accuracy": acc,
            "threshold": thr,
            "accuracy_4fold_cv": cv,
            "images_without_face": int((~found).sum()),
        }
    benchmark.extra_info.update(kind="lfw", **out)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert out["facecore"]["accuracy"] >= out["face_recognition"]["accuracy"]


def _model_key() -> str:
    """Cache key: the models and the code of the stages that produce an embedding."""
    import facecore
    from facecore.runtime.backend import default_models_dir, load_manifest

    h = hashlib.sha256()
    m = load_manifest(default_models_dir())["models"]
    for role in sorted(m):
        h.update(m[role]["sha256"].encode())
    src = Path(facecore.__file__).parent / "pipeline"
    for name in ("detect.py", "align.py", "embed.py", "engine.py"):
        h.update((src / name).read_bytes())
    return "-" + h.hexdigest()[:16]
