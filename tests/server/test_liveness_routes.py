"""Liveness through the server: face/liveness (1, 3 or 8 images), the liveness face_field, and
liveness_control on match, identify, add and update, with the MiniFASNet pair installed
(the `liveness_models` directory); without it, the test_errors server answers 223119."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from live_server import SHARED, Client, b64, lfw

SPOOF = SHARED / "spoof"
REAL = {"image": b64(SPOOF / "image_T1.jpg"), "image_type": "BASE64"}
REPLAY = {"image": b64(SPOOF / "image_F2.jpg"), "image_type": "BASE64"}
PRINT = {"image": b64(SPOOF / "image_F1.jpg"), "image_type": "BASE64"}


def code(env: dict[str, Any]) -> int:
    return int(env["error_code"])


def test_one_image(live: Client) -> None:
    r = live.ok("face/liveness", [REAL])
    (face,) = r["face_list"]
    assert r["face_liveness"] == face["liveness"]["livemapscore"] > 0.9
    assert set(r["thresholds"]) == {"frr_1e-4", "frr_1e-3", "frr_1e-2"}
    assert {"face_token", "location", "face_probability", "angle"} <= set(face)


def test_three_images_take_the_median(live: Client) -> None:
    """Two replays and one real capture: the real frame cannot lift the request."""
    r = live.ok("face/liveness", [REPLAY, REAL, REPLAY])
    scores = sorted(f["liveness"]["livemapscore"] for f in r["face_list"])
    assert r["face_liveness"] == scores[1] < 0.05
    r = live.ok("face/liveness", [REAL, REPLAY, REAL])
    assert r["face_liveness"] > 0.9  # nor can one bad frame sink a real user


def test_eight_images_and_face_fields(live: Client) -> None:
    items = [{**REAL, "face_field": "age,quality"}] * 4 + [PRINT] * 4
    r = live.ok("face/liveness", items)
    assert (
        len(r["face_list"]) == 8 and "age" in r["face_list"][0] and "quality" in r["face_list"][0]
    )
    lows = sorted(f["liveness"]["livemapscore"] for f in r["face_list"])
    assert r["face_liveness"] == lows[3]  # the lower of the two middle scores


@pytest.mark.parametrize("n", [0, 2, 4, 9])
def test_wrong_image_counts(live: Client, n: int) -> None:
    env = live.post("face/liveness", [REAL] * n)
    assert code(env) == 222208 and "1 or 3 or 8" in env["error_detail"]


def test_liveness_face_field_and_token(live: Client) -> None:
    (face,) = live.ok("face/detect", {**REPLAY, "face_field": "liveness"})["face_list"]
    assert face["liveness"]["livemapscore"] < 0.05
    token = {"image": face["face_token"], "image_type": "FACE_TOKEN"}
    r = live.ok("face/liveness", [token])  # the stored score answers for the token
    assert r["face_liveness"] == face["liveness"]["livemapscore"]
    (plain,) = live.ok("face/detect", REAL)["face_list"]
    env = live.post("face/liveness", [{"image": plain["face_token"], "image_type": "FACE_TOKEN"}])
    assert code(env) == 223119 and "without liveness" in env["error_detail"]


def test_liveness_control_on_every_route(live: Client) -> None:
    real_lfw = {"image": b64(lfw("Aaron_Sorkin")), "image_type": "BASE64"}
    live.ok("face/add", {**REAL, "group_id": "g", "user_id": "real", "liveness_control": "HIGH"})
    env = live.post(
        "face/add", {**REPLAY, "group_id": "g", "user_id": "fake", "liveness_control": "LOW"}
    )
    assert code(env) == 223120 and env["error_msg"] == "liveness check fail"
    env = live.post(
        "face/update", {**REPLAY, "group_id": "g", "user_id": "real", "liveness_control": "NORMAL"}
    )
    assert code(env) == 223120
    assert live.ok("face/identify", {**REAL, "group_id_list": "g", "liveness_control": "HIGH"})
    env = live.post("face/identify", {**REPLAY, "group_id_list": "g", "liveness_control": "LOW"})
    assert code(env) == 223120
    env = live.post(
        "face/multi-search", {**REPLAY, "group_id_list": "g", "liveness_control": "LOW"}
    )
    assert code(env) == 223120
    env = live.post(
        "face/match", [{**REAL, "liveness_control": "HIGH"}, {**REPLAY, "liveness_control": "LOW"}]
    )
    assert code(env) == 223120
    live.ok("face/match", [{**REAL, "liveness_control": "HIGH"}, real_lfw])
    # the replay was never stored
    assert live.ok("user/list", {"group_id": "g"})["user_id_list"] == ["real"]


def test_capabilities_say_liveness_is_on(live: Client, server: Client) -> None:
    caps = httpx.get(live.url + "/face-api/v3/capabilities").json()["result"]
    assert caps["liveness_control"]["installed"] is True and "liveness" in caps["face_field"]
    assert "liveness" not in caps["unsupported"]
    off = httpx.get(server.url + "/face-api/v3/capabilities").json()["result"]
    assert off["liveness_control"]["installed"] is False and "liveness" in off["unsupported"]
    env = server.post("face/liveness", [REAL])
    assert code(env) == 223119 and "LIVENESS_MODEL_DIR" in env["error_detail"]
