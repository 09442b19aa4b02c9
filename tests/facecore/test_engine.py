"""The Engine's public contract: fields, ordering, tokens, scores, threads, bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from facecore import Engine, decode_image
from facecore.errors import FaceCoreError, InvalidArgument, InvalidType
from facecore.score import similarity_to_score

from tests.conftest import SHARED_DATA

LFW = SHARED_DATA / "lfw" / "images"
MISC = SHARED_DATA / "misc"
ALL_FIELDS = (
    "landmark",
    "angle",
    "age",
    "gender",
    "expression",
    "emotion",
    "eye_status",
    "quality",
    "embedding",
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def _img(path: object) -> np.ndarray:
    return decode_image(path.read_bytes())  # type: ignore[attr-defined]


def test_default_fields(engine: Engine) -> None:
    img = _img(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    (face,) = engine.detect(img)
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert 0.9 < face.probability <= 1.0
    assert face.landmarks5.shape == (5, 2)
    assert len(face.token) == 32 and int(face.token, 16) >= 0
    assert face.embedding is None and face.age is None and face.landmarks72 is None


def test_all_fields(engine: Engine) -> None:
    img = _img(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    (face,) = engine.detect(img, fields=ALL_FIELDS)
    assert face.landmarks72 is not None and face.landmarks72.shape == (72, 2)
    assert face.landmark4 is not None and face.landmark4.shape == (4, 2)
    x1, y1, x2, y2 = face.box
    pts = face.landmarks72
    inside = (
        (pts[:, 0] > x1 - 10)
        & (pts[:, 0] < x2 + 10)
        & (pts[:, 1] > y1 - 10)
        & (pts[:, 1] < y2 + 10)
    )
    assert inside.mean() > 0.9
    assert face.pose is not None and all(-90 <= a <= 90 for a in face.pose[:2])
    assert face.embedding is not None and face.embedding.shape == (128,)
    assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert face.age is not None and 15 < face.age < 80
    assert face.gender == "male" and face.gender_probability is not None
    assert face.emotion is not None and sum(face.emotion.values()) == pytest.approx(1.0, abs=1e-4)
    assert face.expression is not None and face.expression[0] in ("none", "smile", "laugh")
    assert face.eye_status is not None and min(face.eye_status) > 0.5
    assert face.quality is not None and set(face.quality) == {
        "blur",
        "illumination",
        "completeness",
    }


def test_aliases_and_unknown_fields(engine: Engine) -> None:
    img = _img(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    (face,) = engine.detect(img, fields=("feature", "landmark72", "pose"))
    assert face.embedding is not None and face.landmarks72 is not None and face.pose is not None
    for bad in ("beauty", "glasses", "race", "face_shape", "nonsense"):
        with pytest.raises(InvalidArgument, match=bad):
            engine.detect(img, fields=(bad,))


def test_largest_first_and_max_faces(engine: Engine) -> None:
    img = _img(MISC / "bald_guys.jpg")
    faces = engine.detect(img, max_faces=30)
    assert len(faces) >= 20
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
    assert areas == sorted(areas, reverse=True)
    top3 = engine.detect(img, max_faces=3, fields=("embedding",))
    assert [f.token for f in top3] == [f.token for f in faces[:3]]
    assert all(f.embedding is not None for f in top3)


def test_token_is_deterministic_per_image_and_box(engine: Engine) -> None:
    a = _img(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg")
    b = _img(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg")
    assert engine.detect(a)[0].token == engine.detect(a.copy())[0].token
    assert engine.detect(a)[0].token != engine.detect(b)[0].token
    tokens = [f.token for f in engine.detect(_img(MISC / "couple.jpg"), max_faces=5)]
    assert len(set(tokens)) == len(tokens)


def test_compare_same_and_different_people(engine: Engine) -> None:
    def face(name: str, k: int) -> object:
        path = sorted((LFW / name).glob("*.jpg"))[k]
        return engine.detect(_img(path), fields=("embedding",))[0]

    same = engine.compare(face("Tony_Blair", 0), face("Tony_Blair", 1))  # type: ignore[arg-type]
    other = engine.compare(face("Tony_Blair", 0), face("Colin_Powell", 0))  # type: ignore[arg-type]
    assert same > 80 > other
    assert 0 <= other and same <= 100
    with pytest.raises(InvalidArgument, match="embedding"):
        engine.compare(
            engine.detect(_img(LFW / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"))[0],
            face("Colin_Powell", 0),
        )  # type: ignore[arg-type]


def test_score_is_monotonic_and_bounded() -> None:
    c = np.linspace(-1.5, 1.5, 2001)
    s = similarity_to_score(c)
    assert s[0] == 0 and s[-1] == 100
    assert np.all(np.diff(s) >= 0)


def test_no_face_is_an_empty_list(engine: Engine) -> None:
    assert engine.detect(_img(MISC / "pilatus800.jpg"), fields=ALL_FIELDS) == []


def test_threads_give_the_same_answers(engine: Engine) -> None:
    paths = sorted(LFW.glob("*/*.jpg"))[:40:4]
    images = [_img(p) for p in paths]
    expected = [engine.detect(im, fields=("embedding", "landmark"))[0] for im in images]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(
            pool.map(lambda im: engine.detect(im, fields=("embedding", "landmark"))[0], images * 3)
        )
    for i, face in enumerate(got):
        ref = expected[i % len(images)]
        assert face.token == ref.token
        assert face.embedding is not None and ref.embedding is not None
        np.testing.assert_allclose(face.embedding, ref.embedding, atol=1e-5)


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((100, 100), np.uint8), InvalidArgument),
        (np.zeros((100, 100, 4), np.uint8), InvalidArgument),
        (np.zeros((100, 100, 3), np.float32), InvalidType),
        ([[0, 0, 0]], InvalidType),
    ],
    ids=["grey", "bgra", "float", "list"],
)
def test_bad_images(engine: Engine, image: object, error: type[FaceCoreError]) -> None:
    with pytest.raises(error):
        engine.detect(image)  # type: ignore[arg-type]


def test_bad_max_faces(engine: Engine) -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(InvalidArgument):
            engine.detect(img, max_faces=bad)  # type: ignore[arg-type]


def test_capabilities(engine: Engine) -> None:
    caps = engine.capabilities()
    assert set(caps["face_field"]) >= {"age", "gender", "landmark", "quality", "feature"}
    assert {"beauty", "glasses", "race", "face_shape", "face_type", "parsing"} <= set(
        caps["unsupported"]
    )
    assert "occlusion" in caps["unsupported"]
