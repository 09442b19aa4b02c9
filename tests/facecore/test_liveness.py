"""Silent image liveness: the user-supplied MiniFASNet pair, installed by facecore.convert.minifasnet,
scored through facecore.pipeline.liveness and Engine(fields=("liveness",))."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from facecore import Engine, decode_image
from facecore.convert import minifasnet
from facecore.errors import FaceCoreError
from facecore.pipeline.liveness import THRESHOLDS, crop_box, crops

from tests.conftest import LIVENESS_SOURCE, MODELS_DIR, SHARED_DATA

SPOOF = SHARED_DATA / "spoof"
REAL = ["image_T1.jpg", "image_T1_c3e2048.jpg", "image_T2_c3e2048.jpg"]
FAKE = ["image_F1.jpg", "image_F2.jpg", "image_F1_c3e2048.jpg", "image_F2_c3e2048.jpg"]


@pytest.fixture(scope="module")
def engine(liveness_models: Path) -> Engine:
    return Engine(models_dir=liveness_models)


def score(engine: Engine, name: str) -> float:
    faces = engine.detect(decode_image((SPOOF / name).read_bytes()), 1, ("liveness",))
    assert len(faces) == 1 and faces[0].liveness is not None
    return faces[0].liveness


def test_installed_models_take_a_batch_and_match_the_originals(liveness_models: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 255, (4, 3, 80, 80)).astype(np.float32)
    for name, _, _, file in minifasnet.MODELS.values():
        ours = ort.InferenceSession(str(liveness_models / file)).run(None, {"crops": x})[0]
        orig = ort.InferenceSession(str(LIVENESS_SOURCE / name))
        logits = np.concatenate([orig.run(None, {"input": x[i : i + 1]})[0] for i in range(4)])
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        assert ours.shape == (4, 3)
        np.testing.assert_allclose(ours, e / e.sum(axis=1, keepdims=True), atol=1e-5)


def test_unknown_or_missing_files_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(minifasnet.LivenessSourceError, match="missing"):
        minifasnet.build(src, tmp_path)
    for name, *_ in minifasnet.MODELS.values():
        shutil.copy(LIVENESS_SOURCE / name, src / name)
    (src / "2.7_80x80_MiniFASNetV2.onnx").write_bytes(b"not the checked export")
    with pytest.raises(minifasnet.LivenessSourceError, match="refusing unknown weights"):
        minifasnet.build(src, tmp_path)


def test_without_the_models_liveness_is_off() -> None:
    engine = Engine(models_dir=MODELS_DIR)
    assert engine.liveness is None and engine.capabilities()["liveness"] is False
    image = decode_image((SPOOF / REAL[0]).read_bytes())
    with pytest.raises(FaceCoreError, match="LIVENESS_MODEL_DIR") as info:
        engine.detect(image, 1, ("liveness",))
    assert info.value.code == 223119


def test_crop_box_stays_inside_and_keeps_the_centre() -> None:
    # room to spare: the box grows 2.7x about its centre
    assert crop_box(np.array([100, 100, 200, 200]), 2.7, 1000, 1000) == (15, 15, 285, 285)
    # near the left edge: shifted right, same size
    left, top, right, bottom = crop_box(np.array([0, 100, 100, 200]), 2.7, 1000, 1000)
    assert (left, top, right, bottom) == (0, 15, 270, 285)
    # too small an image: the scale shrinks to fit
    assert crop_box(np.array([10, 10, 90, 90]), 4.0, 100, 100) == (0, 0, 99, 99)


def test_batched_scores_equal_single_ones(engine: Engine) -> None:
    image = decode_image((SHARED_DATA / "misc" / "2007_007763.jpg").read_bytes())
    faces = engine.detect(image, 10)
    boxes = np.stack([f.box for f in faces])
    assert engine.liveness is not None and len(boxes) >= 5
    batched = engine.liveness.predict(image, boxes)
    single = [engine.liveness.predict(image, boxes[i : i + 1])[0] for i in range(len(boxes))]
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert crops(image, boxes, 2.7).shape == (len(boxes), 3, 80, 80)


def test_real_captures_score_above_screen_replays(engine: Engine) -> None:
    """Seven samples cannot give a rate; they do show the ordering the model exists for: each real
    capture scores above each screen replay, and the clear real ones pass HIGH (0.9)."""
    real = {n: score(engine, n) for n in REAL}
    fake = {n: score(engine, n) for n in FAKE}
    replays = [fake["image_F2.jpg"], fake["image_F2_c3e2048.jpg"]]
    assert min(real.values()) > max(replays)
    assert real["image_T1.jpg"] > 0.9 and real["image_T1_c3e2048.jpg"] > 0.9
    assert max(replays) < 0.05  # refused even at LOW


def test_thresholds_are_calibrated_and_ordered() -> None:
    assert set(THRESHOLDS) == {"frr_1e-4", "frr_1e-3", "frr_1e-2"}
    assert 0 < THRESHOLDS["frr_1e-4"] <= THRESHOLDS["frr_1e-3"] <= THRESHOLDS["frr_1e-2"] < 1
