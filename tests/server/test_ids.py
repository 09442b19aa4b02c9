"""Ids mean what the spec says, whole: every id-bearing parameter of every route, and the appid in
the query, refuse control characters, whitespace and unicode look-alikes around or inside a valid
id with that parameter's code, and such a request changes nothing in the library.

Walked from routes.OPS, so a route or id parameter added later is walked too.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import spec_schemas as S
from facecore_server import params as P
from facecore_server.routes import OPS
from live_server import Client, b64, lfw

TOKEN = "0123456789abcdef0123456789abcdef"
VALID = {"group_id": "g1", "src_group_id": "g1", "dst_group_id": "g2", "user_id": "u1"}
# A valid id turned into a near miss: a "$" that matches before a final newline, stray
# whitespace or controls, and characters that look like (or upper-case into) ASCII ones.
NEAR = (
    "{}\n",
    "\n{}",
    "{}\r\n",
    "{} ",
    " {}",
    "{}\t",
    "{}\x00",
    "{}\x0b",
    "{}\u0085",  # NEL, a line break for str.splitlines
    "{}\u2028",
    "{}\u200b",  # zero width space
    "\ufeff{}",
    "\u0430{}",  # Cyrillic a
    "\uff41{}",  # fullwidth a
    "{}\u0131",  # dotless i: upper() is "I"
    "{}\u0661",  # Arabic-Indic digit one
)
ID_PARAMS = {
    p.name: p
    for op in OPS
    for p in op.params
    if p.kind == "id" or p in (P.GROUP_ID_OR_ALL, P.GROUP_ID_LIST)
}


def body_for(op_params: tuple[P.Param, ...], face: str) -> dict[str, Any]:
    """A body every one of whose parameters is valid (the image a face_token, so no model
    runs: the id checks come first either way)."""
    body: dict[str, Any] = {}
    for p in op_params:
        if p.name in VALID:
            body[p.name] = VALID[p.name]
        elif p is P.GROUP_ID_LIST:
            body[p.name] = "g1,g2"
        elif p is P.FACE_TOKEN:
            body[p.name] = TOKEN
        elif p is P.IMAGE:
            body[p.name] = face
        elif p is P.IMAGE_TYPE:
            body[p.name] = "FACE_TOKEN"
    return body


def library(server: Client) -> Any:
    groups = server.ok("group/list", {})["group_id_list"]
    return {g: server.ok("user/list", {"group_id": g})["user_id_list"] for g in groups}


@pytest.fixture(scope="module")
def face(server: Client) -> str:
    """A detected face's token, and a library of g1 (u1) and g2."""
    token: str = server.ok(
        "face/add",
        {
            "image": b64(lfw("Aaron_Sorkin")),
            "image_type": "BASE64",
            "group_id": "g1",
            "user_id": "u1",
        },
    )["face_token"]
    server.ok("group/add", {"group_id": "g2"})
    return token


def cases() -> list[tuple[str, str]]:
    return [(op.path, p.name) for op in OPS for p in op.params if p.name in ID_PARAMS]


@pytest.mark.parametrize(("route", "name"), cases())
def test_every_id_parameter_is_matched_whole(
    server: Client, face: str, route: str, name: str
) -> None:
    op = next(o for o in OPS if o.path == route)
    body = body_for(op.params, face)
    base = {"face_token": TOKEN, "group_id_list": "g1"}.get(name, body.get(name))
    before = library(server)
    for near in NEAR:
        if name == "group_id_list" and near.strip(" ") == "{}":
            continue  # group_id_list forgives ASCII spaces around its commas (" g1, g2")
        env = server.post(route, {**body, name: near.format(base)})
        S.check_error(env, ID_PARAMS[name].code)
    assert library(server) == before


@pytest.mark.parametrize("near", NEAR)
def test_a_face_token_image_is_matched_whole(server: Client, face: str, near: str) -> None:
    """image_type=FACE_TOKEN: a valid token with anything around it is a format error (222025),
    not a token that does not exist."""
    for route in ("face/detect", "face/identify"):
        body = {"image": near.format(face), "image_type": "FACE_TOKEN", "group_id_list": "g1"}
        S.check_error(server.post(route, body), 222025)
    assert (
        server.post("face/detect", {"image": face, "image_type": "FACE_TOKEN"})["error_code"] == 0
    )


@pytest.mark.parametrize("near", NEAR)
def test_the_appid_is_matched_whole(server: Client, face: str, near: str) -> None:
    """?appid= names a tenant: a near miss is 222014 and creates no tenant."""
    r = httpx.post(
        f"{server.url}/face-api/v3/group/add",
        params={"appid": near.format("A")},
        json={"group_id": "made"},
        timeout=30,
    )
    S.check_error(r.json(), 222014)
    assert server.ok("group/list", {}, appid="A") == {"group_id_list": []}


@pytest.mark.parametrize("near", NEAR)
def test_enums_are_matched_whole(server: Client, face: str, near: str) -> None:
    """Enum values take any ASCII letter case, nothing more: "l\u0131ve" upper-cases to LIVE."""
    token = {"image": face, "image_type": "FACE_TOKEN", "group_id_list": "g1"}
    for p, value in (
        (P.IMAGE_TYPE, "face_token"),
        (P.FACE_TYPE, "live"),
        (P.QUALITY_CONTROL, "none"),
        (P.LIVENESS_CONTROL, "none"),
    ):
        S.check_error(server.post("face/identify", {**token, p.name: near.format(value)}), p.code)
    assert server.post("face/identify", {**token, "face_type": "live"})["error_code"] == 0
    S.check_error(server.post("face/identify", {**token, "face_type": "l\u0131ve"}), 222024)


@pytest.mark.parametrize("value", ["\u0661", "1\u0660", "\uff11", "1\n", "\t1"])
def test_integers_are_ascii_digits(server: Client, face: str, value: str) -> None:
    S.check_error(server.post("group/list", {"start": value}), P.START.code)
