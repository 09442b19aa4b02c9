"""LFW embeddings of both pipelines, cached: FaceCore's (`facecore.evaluation.embed_central_faces`)
and face_recognition's dlib pipeline, the reference the pipeline bench compares against.

The reference is face_recognition 1.3.0 exactly as its users call it: `face_locations` (dlib HOG,
upsample 1) then `face_encodings` (dlib 5-point predictor, dlib ResNet descriptor, 1 jitter), on
the same decoded RGB arrays. For each image the face nearest the centre is used; where a pipeline
finds no face, pairs with that image count as "different" (cosine -1), which is what a user of
that pipeline would get. Cached in /tmp/facecore-bench/lfw-<pipeline>.npz (3,074 images take
~10 min for the reference on one core).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from facecore.evaluation import nearest_to_centre

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
CACHE = Path("/tmp/facecore-bench")

Embeddings = tuple[np.ndarray, np.ndarray]  # unit-norm (n, 128), found (n,)


def reference_embeddings(paths: list[Path]) -> Embeddings:
    """face_recognition's pipeline: (unit-norm embeddings (n,128), found (n,))."""
    import face_recognition
    from facecore.pipeline.image import decode_image

    emb = np.zeros((len(paths), 128), dtype=np.float32)
    found = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        rgb = np.ascontiguousarray(decode_image(p.read_bytes())[:, :, ::-1])
        locs = face_recognition.face_locations(rgb, number_of_times_to_upsample=1, model="hog")
        if not locs:
            continue
        boxes = [np.array([l, t, r, b], dtype=np.float64) for t, r, b, l in locs]
        k = nearest_to_centre(boxes, rgb.shape[1], rgb.shape[0])
        enc = face_recognition.face_encodings(rgb, [locs[k]], num_jitters=1, model="small")[0]
        emb[i] = enc / np.linalg.norm(enc)
        found[i] = True
    return emb, found


def cached(
    name: str, paths: list[Path], make: Callable[[list[Path]], Embeddings], key: str = ""
) -> Embeddings:
    """Embeddings of pipeline `name`, from /tmp/facecore-bench when the file list matches."""
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"lfw-{name}{key}.npz"
    names = np.array([str(p.relative_to(LFW)) for p in paths])
    if f.exists():
        z = np.load(f)
        if np.array_equal(z["names"], names):
            return z["emb"], z["found"]
    t0 = time.perf_counter()
    emb, found = make(paths)
    np.savez(f, emb=emb, found=found, names=names, seconds=time.perf_counter() - t0)
    return emb, found


if __name__ == "__main__":  # precompute the reference cache: .venv/bin/python bench/_lfw.py
    from facecore.evaluation import best_threshold_accuracy, lfw_images, pair_similarities

    ps = lfw_images(LFW)
    e, fnd = cached("reference", ps, reference_embeddings)
    s, y = pair_similarities(e, fnd, ps, LFW)
    print(
        "reference: faces found",
        int(fnd.sum()),
        "of",
        len(ps),
        "accuracy",
        best_threshold_accuracy(s, y),
    )
