"""Every v3 route's happy path against one live server, with real LFW and group photos; each answer
is validated against the spec's response shape (spec_schemas.py), and what it says is checked
against what was stored or detected before. Also: the four path prefixes, the aliases, appid
isolation, the spec's own request examples, log ids and /capabilities."""

from __future__ import annotations

import base64
import copy
import csv
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import jsonschema
import numpy as np
import pytest
import spec_schemas as S
from live_server import LFW, MISC, Client, b64, lfw, photos

PREFIXES = ("/face-api/v3", "/v3", "/api/face-api/v3", "/api/v3")
ALL_FIELDS = "age,gender,expression,emotion,landmark,eye_status,quality,feature"
DEFAULT_KEYS = {"face_token", "location", "face_probability", "angle"}
# (person, image to enrol, another image of them to search with): "same" pairs of pairs.txt.
PEOPLE = (
    ("Federico_Trillo", 2, 3),
    ("Sachiko_Yamada", 1, 4),
    ("Abdullah_Gul", 1, 6),
    ("Howard_Dean", 1, 3),
    ("Christine_Baumgartner", 2, 4),
)
# "different" pairs of pairs.txt.
DIFFERENT = (
    (("Bill_Nelson", 2), ("Gillian_Anderson", 1)),
    (("Glenn_Plummer", 1), ("Maria_Garcia", 1)),
    (("Dino_Risi", 1), ("Gabriel_Farhi", 1)),
)
GROUP_PHOTO = "2007_007763.jpg"  # 7 annotated faces (faces.csv)


def raw(
    server: Client,
    route: str,
    body: Any,
    appid: str | None = "test_app",
    prefix: str = "/face-api/v3",
) -> httpx.Response:
    params = {"appid": appid} if appid is not None else {}
    r = httpx.post(f"{server.url}{prefix}/{route}", params=params, json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r


def call(
    server: Client, route: str, body: Any, appid: str = "test_app", prefix: str = "/face-api/v3"
) -> Any:
    """POST, assert success and the spec's result shape for `route`; returns `result`."""
    env = raw(server, route, body, appid, prefix).json()
    assert env["error_code"] == 0, env
    return S.check(route, env)


def error(server: Client, route: str, body: Any, code: int, appid: str = "test_app") -> None:
    env = raw(server, route, body, appid).json()
    S.check_error(env, code)


def image(path: Path) -> dict[str, str]:
    return {"image": b64(path), "image_type": "BASE64"}


def token(t: str) -> dict[str, str]:
    return {"image": t, "image_type": "FACE_TOKEN"}


def read(path: Path) -> np.ndarray:
    px = cv2.imread(str(path))
    assert px is not None, path
    return px


def png(pixels: np.ndarray) -> dict[str, str]:
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    return {"image": base64.b64encode(buf.tobytes()).decode(), "image_type": "BASE64"}


def detect_one(server: Client, path: Path, fields: str = "") -> dict[str, Any]:
    body = image(path)
    if fields:
        body["face_field"] = fields
    result = call(server, "face/detect", body)
    assert result["face_num"] == 1 == len(result["face_list"])
    face: dict[str, Any] = result["face_list"][0]
    return face


def pairs() -> dict[tuple[str, str], str]:
    """pairs.txt as {(image path, image path): "1" same / "0" different}."""
    out = {}
    for line in (LFW.parent / "pairs.txt").read_text().splitlines():
        a, b, same = line.split()
        out[(a, b)] = same
    return out


def rel(name: str, index: int) -> str:
    return str(lfw(name, index).relative_to(LFW.parent))


def area(face: dict[str, Any]) -> float:
    return float(face["location"]["width"] * face["location"]["height"])


# ---------------------------------------------------------------------------------------- detect


def test_detect_default_fields(server: Client) -> None:
    face = detect_one(server, lfw("Aaron_Sorkin"))
    assert set(face) == DEFAULT_KEYS  # spec: by default only token, box, probability, angle
    assert face["face_probability"] > 0.9
    loc = face["location"]
    # LFW images are 250x250 with the face in the middle
    assert 80 < loc["left"] + loc["width"] / 2 < 170 and 80 < loc["top"] + loc["height"] / 2 < 170
    assert 60 < loc["width"] < 200


# face_field values FaceCore computes (landmark brings landmark72 with it)
SUPPORTED_FIELDS = {
    "age",
    "gender",
    "expression",
    "emotion",
    "landmark",
    "landmark72",
    "eye_status",
    "quality",
    "feature",
}


def test_detect_all_fields(server: Client) -> None:
    face = detect_one(server, lfw("Aaron_Sorkin"), ALL_FIELDS)
    wanted = SUPPORTED_FIELDS
    assert set(face) == DEFAULT_KEYS | wanted
    assert len(face["landmark"]) == 4 and len(face["landmark72"]) == 72
    loc = face["location"]
    x0, y0 = loc["left"] - 0.3 * loc["width"], loc["top"] - 0.3 * loc["height"]
    x1, y1 = loc["left"] + 1.3 * loc["width"], loc["top"] + 1.3 * loc["height"]
    for p in face["landmark"] + face["landmark72"]:
        assert x0 < p["x"] < x1 and y0 < p["y"] < y1, (p, loc)
    eyes_y = (face["landmark"][0]["y"] + face["landmark"][1]["y"]) / 2
    assert eyes_y < face["landmark"][3]["y"]  # eyes above the mouth
    feature = np.frombuffer(base64.b64decode(face["feature"]), dtype="<f4")
    assert feature.shape == (128,) and np.isfinite(feature).all()
    assert abs(float(np.linalg.norm(feature)) - 1) < 1e-3
    assert face["gender"]["type"] == "male"
    assert 15 < face["age"] < 70
    assert face["quality"]["completeness"] == 1 and face["quality"]["blur"] < 0.5
    # the token does not depend on which fields were asked for
    assert face["face_token"] == detect_one(server, lfw("Aaron_Sorkin"))["face_token"]


def test_the_schemas_refuse_what_the_spec_does_not_allow(server: Client) -> None:
    """The checks above are only as good as spec_schemas: it must reject a wrong answer."""
    env = raw(
        server, "face/detect", {**image(lfw("Aaron_Sorkin")), "face_field": "quality,landmark"}
    ).json()
    S.check("face/detect", env)
    face = env["result"]["face_list"][0]

    def broken(change: Any) -> dict[str, Any]:
        bad: dict[str, Any] = copy.deepcopy(env)
        change(bad, bad["result"]["face_list"][0])
        return bad

    wrong = [
        broken(lambda e, f: f.update(beauty=55.1)),
        broken(lambda e, f: f.update(race={"type": "yellow", "probability": 0.9})),
        broken(lambda e, f: f.update(angel=f.pop("angle"))),
        broken(lambda e, f: f["quality"].update(occlusion={"nose": 0})),
        broken(lambda e, f: f.update(landmark=f["landmark"][:3])),
        broken(lambda e, f: f.update(face_token="not-a-token")),
        broken(lambda e, f: f["location"].update(rotation=1.5)),
        broken(lambda e, f: e.update(log_id=123456789012)),
        broken(lambda e, f: e.update(cached=1)),
        broken(lambda e, f: e.update(error_detail="x")),
        broken(lambda e, f: e["result"].update(face_num="1")),
    ]
    for bad in wrong:
        with pytest.raises(jsonschema.ValidationError):
            S.check("face/detect", bad)
    assert face == env["result"]["face_list"][0]  # deep copies: the original is intact


def test_detect_leaves_out_fields_it_cannot_compute(server: Client) -> None:
    fields = "beauty,glasses,race,faceshape,face_shape,facetype,face_type,parsing,quality"
    face = detect_one(server, lfw("Aaron_Sorkin"), fields)
    for name in S.ABSENT_FIELDS:
        assert name not in face
    assert set(face) == DEFAULT_KEYS | {"quality"}
    assert "occlusion" not in face["quality"]


def test_detect_max_face_num_on_a_group_photo(server: Client) -> None:
    with (MISC / "faces.csv").open() as f:
        expected = {row["file"]: int(row["faces_min"]) for row in csv.DictReader(f)}[GROUP_PHOTO]
    body = {**image(MISC / GROUP_PHOTO), "max_face_num": 10}
    result = call(server, "face/detect", body)
    faces = result["face_list"]
    assert result["face_num"] == len(faces) and expected <= len(faces) <= 10
    areas = [area(f) for f in faces]
    assert areas == sorted(areas, reverse=True)  # largest first
    assert len({f["face_token"] for f in faces}) == len(faces)
    # fewer asked: the largest ones, the same tokens; a decimal string is accepted as a number
    top3 = call(server, "face/detect", {**body, "max_face_num": "3"})
    assert top3["face_num"] == 3
    assert [f["face_token"] for f in top3["face_list"]] == [f["face_token"] for f in faces[:3]]
    # default: only the largest face
    one = call(server, "face/detect", image(MISC / GROUP_PHOTO))
    assert [f["face_token"] for f in one["face_list"]] == [faces[0]["face_token"]]


def test_base64_variants(server: Client) -> None:
    """docs/api.md: either alphabet, padding optional, line breaks and a data: prefix tolerated;
    enum values in any case."""
    path = lfw("Aaron_Sorkin")
    data = path.read_bytes()
    standard = base64.b64encode(data).decode()
    expected = detect_one(server, path)["face_token"]
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert urlsafe != standard.rstrip("=")  # the image really has + or / in its base64
    for text in (
        urlsafe,
        "data:image/jpeg;base64," + standard,
        "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76)),
    ):
        result = call(server, "face/detect", {"image": text, "image_type": "base64"})
        assert result["face_list"][0]["face_token"] == expected


def test_face_token_works_in_every_route(server: Client) -> None:
    path = lfw("Aaron_Sorkin", 2)
    face = detect_one(server, path, ALL_FIELDS)
    t = face["face_token"]
    again = call(server, "face/detect", {**token(t), "face_field": ALL_FIELDS})
    assert again["face_list"] == [face]  # the remembered face, field for field
    plain = call(server, "face/detect", token(t))["face_list"][0]
    assert plain == {k: face[k] for k in DEFAULT_KEYS}
    match = call(server, "face/match", [token(t), image(path)])
    assert match["score"] > 99 and [f["face_token"] for f in match["face_list"]] == [t, t]
    added = call(server, "face/add", {**token(t), "group_id": "tokens", "user_id": "sorkin"})
    assert added == {"face_token": t, "location": face["location"]}
    found = call(server, "face/identify", {**token(t), "group_id_list": "tokens"})
    assert found["face_token"] == t
    assert [(u["user_id"], u["group_id"]) for u in found["user_list"]] == [("sorkin", "tokens")]
    assert found["user_list"][0]["score"] > 99


# ----------------------------------------------------------------------------------------- match


def test_match_same_and_different_people(server: Client) -> None:
    known = pairs()
    for name, i, j in PEOPLE[:3]:
        assert known[(rel(name, i), rel(name, j))] == "1"
        result = call(server, "face/match", [image(lfw(name, i)), image(lfw(name, j))])
        assert result["score"] > 80, (name, result)
    for (a, i), (b, j) in DIFFERENT:
        assert known[(rel(a, i), rel(b, j))] == "0"
        result = call(server, "face/match", [image(lfw(a, i)), image(lfw(b, j))])
        assert result["score"] < 70, (a, b, result)
    # symmetric, and the tokens are detect's
    (a, i), (b, j) = DIFFERENT[0]
    back = call(server, "face/match", [image(lfw(b, j)), image(lfw(a, i))])
    forth = call(server, "face/match", [image(lfw(a, i)), image(lfw(b, j))])
    assert abs(back["score"] - forth["score"]) < 1e-6
    assert forth["face_list"][0]["face_token"] == detect_one(server, lfw(a, i))["face_token"]
    assert forth["face_list"][1]["face_token"] == back["face_list"][0]["face_token"]


# -------------------------------------------------------------------------------------- identify


@pytest.fixture(scope="module")
def people(server: Client) -> dict[str, str]:
    """Group "people": one face per person of PEOPLE; returns user_id -> face_token."""
    out = {}
    for name, i, _ in PEOPLE:
        body = {
            **image(lfw(name, i)),
            "group_id": "people",
            "user_id": name,
            "user_info": f"info of {name}",
        }
        out[name] = call(server, "face/add", body)["face_token"]
    return out


def test_identify_finds_the_person(server: Client, people: dict[str, str]) -> None:
    for name, _, j in PEOPLE:
        body = {**image(lfw(name, j)), "group_id_list": "people"}
        result = call(server, "face/identify", body)
        assert result["face_token"] == detect_one(server, lfw(name, j))["face_token"]
        [user] = result["user_list"]
        assert user == {
            "group_id": "people",
            "user_id": name,
            "user_info": f"info of {name}",
            "score": user["score"],
        }
        assert user["score"] > 80
        assert call(server, "face/search", body) == result  # the alias


def test_identify_options(server: Client, people: dict[str, str]) -> None:
    name, _, j = PEOPLE[3]
    probe = {**image(lfw(name, j)), "group_id_list": "people"}
    top = call(server, "face/identify", {**probe, "max_user_num": 3})["user_list"]
    assert len(top) == 3 and top[0]["user_id"] == name
    assert len({u["user_id"] for u in top}) == 3
    assert [u["score"] for u in top] == sorted((u["score"] for u in top), reverse=True)
    assert top[1]["score"] < 70
    everyone = call(server, "face/identify", {**probe, "max_user_num": 20})["user_list"]
    assert {u["user_id"] for u in everyone} == set(people)
    # only users at or above the threshold
    strict = call(server, "face/identify", {**probe, "max_user_num": 5, "match_threshold": 80})
    assert [u["user_id"] for u in strict["user_list"]] == [name]
    # user_id restricts the search to that user, however poor the match
    other = PEOPLE[1][0]
    only = call(server, "face/identify", {**probe, "user_id": other, "max_user_num": 5})
    assert [u["user_id"] for u in only["user_list"]] == [other]
    assert only["user_list"][0]["score"] == next(
        u["score"] for u in everyone if u["user_id"] == other
    )


def test_multi_search_finds_every_face(server: Client, people: dict[str, str]) -> None:
    left, right = PEOPLE[3], PEOPLE[1]
    pixels = np.hstack([read(lfw(p[0], p[2])) for p in (left, right)])
    body = {**png(pixels), "group_id_list": "people", "max_face_num": 2}
    result = call(server, "face/multi-search", body)
    assert result["face_num"] == 2 == len(result["face_list"])
    faces = sorted(result["face_list"], key=lambda f: f["location"]["left"])
    assert (
        faces[0]["location"]["left"] + faces[0]["location"]["width"]
        < 260
        < faces[1]["location"]["left"]
    )
    for face, person in zip(faces, (left, right)):
        assert face["user_list"][0]["user_id"] == person[0]
        assert face["user_list"][0]["score"] > 80
    detected = call(server, "face/detect", {**png(pixels), "max_face_num": 2})["face_list"]
    assert {f["face_token"] for f in detected} == {f["face_token"] for f in faces}


# ---------------------------------------------------------------------------------- library


def test_face_add_is_deterministic(server: Client) -> None:
    path = photos("Silvio_Berlusconi")[0]
    first = call(server, "face/add", {**image(path), "group_id": "det", "user_id": "u1"})
    assert first["face_token"] == detect_one(server, path)["face_token"]
    again = raw(server, "face/add", {**image(path), "group_id": "det", "user_id": "u2"}).json()
    S.check_error(again, 223105)
    other = call(server, "face/add", {**image(path), "group_id": "det2", "user_id": "u1"})
    assert other == first  # same face, same token, in another group
    listed = call(server, "face/list", {"group_id": "det", "user_id": "u1"})["face_list"]
    assert [f["face_token"] for f in listed] == [first["face_token"]]
    error(server, "face/list", {"group_id": "det", "user_id": "u2"}, 223103)  # not created


def test_face_update_replaces_the_faces(server: Client) -> None:
    g, u = "upd", "silvio"
    pics = photos("Silvio_Berlusconi")[1:]
    tokens = [
        call(server, "face/add", {**image(p), "group_id": g, "user_id": u, "user_info": "old"})[
            "face_token"
        ]
        for p in pics[:2]
    ]
    listed = call(server, "face/list", {"group_id": g, "user_id": u})["face_list"]
    assert sorted(f["face_token"] for f in listed) == sorted(tokens)
    new = call(
        server, "face/update", {**image(pics[2]), "group_id": g, "user_id": u, "user_info": "new"}
    )
    assert new["face_token"] not in tokens
    listed = call(server, "face/list", {"group_id": g, "user_id": u})["face_list"]
    assert [f["face_token"] for f in listed] == [new["face_token"]]
    assert call(server, "user/get", {"group_id": g, "user_id": u})["user_list"] == [
        {"user_info": "new", "group_id": g}
    ]
    # without user_info the info stays
    call(server, "face/update", {**image(pics[3]), "group_id": g, "user_id": u})
    assert (
        call(server, "user/get", {"group_id": g, "user_id": u})["user_list"][0]["user_info"]
        == "new"
    )
    # the replaced faces are no longer searched
    hits = call(server, "face/identify", {**image(pics[0]), "group_id_list": g, "max_user_num": 5})[
        "user_list"
    ]
    assert len(hits) == 1 and hits[0]["user_id"] == u
    error(server, "face/update", {**image(pics[0]), "group_id": g, "user_id": "nobody"}, 223103)


def test_face_list_and_delete(server: Client) -> None:
    g, u = "fdel", "tony"
    added = [
        call(server, "face/add", {**image(p), "group_id": g, "user_id": u})["face_token"]
        for p in photos("Tony_Blair")[:2]
    ]
    listed = call(server, "face/list", {"group_id": g, "user_id": u})
    assert call(server, "face/getlist", {"group_id": g, "user_id": u}) == listed
    assert sorted(f["face_token"] for f in listed["face_list"]) == sorted(added)
    for f in listed["face_list"]:
        ctime = time.mktime(time.strptime(f["ctime"], "%Y-%m-%d %H:%M:%S"))
        assert abs(ctime - time.time()) < 600
    assert (
        call(server, "face/delete", {"group_id": g, "user_id": u, "face_token": added[0]}) is None
    )
    listed = call(server, "face/list", {"group_id": g, "user_id": u})["face_list"]
    assert [f["face_token"] for f in listed] == [added[1]]
    call(server, "face/delete", {"group_id": g, "user_id": u, "face_token": added[1]})
    # the last face took the user with it
    error(server, "face/list", {"group_id": g, "user_id": u}, 223103)
    error(server, "user/get", {"group_id": g, "user_id": u}, 223103)
    assert call(server, "user/list", {"group_id": g})["user_id_list"] == []


def test_user_copy_and_get(server: Client) -> None:
    src, dst, u = "copy_src", "copy_dst", "jiang"
    pics = photos("Jiang_Zemin")
    t = call(
        server,
        "face/add",
        {**image(pics[0]), "group_id": src, "user_id": u, "user_info": "president"},
    )["face_token"]
    call(server, "group/add", {"group_id": dst})
    assert (
        call(server, "user/copy", {"user_id": u, "src_group_id": src, "dst_group_id": dst}) is None
    )
    listed = call(server, "face/list", {"group_id": dst, "user_id": u})["face_list"]
    assert [f["face_token"] for f in listed] == [t]
    everywhere = call(server, "user/get", {"group_id": "@ALL", "user_id": u})["user_list"]
    assert sorted(everywhere, key=lambda x: x["group_id"]) == [
        {"user_info": "president", "group_id": dst},
        {"user_info": "president", "group_id": src},
    ]
    assert call(server, "user/get", {"group_id": dst, "user_id": u})["user_list"] == [
        {"user_info": "president", "group_id": dst}
    ]
    found = call(server, "face/identify", {**image(pics[1]), "group_id_list": dst})["user_list"]
    assert found[0]["user_id"] == u and found[0]["group_id"] == dst
    # copying again skips the faces already there
    call(server, "user/copy", {"user_id": u, "src_group_id": src, "dst_group_id": dst})
    assert len(call(server, "face/list", {"group_id": dst, "user_id": u})["face_list"]) == 1


@pytest.fixture(scope="module")
def crowd_tokens(server: Client) -> list[str]:
    """Tokens of the group photo's faces, detected under every appid that uses them (tokens are
    per appid; the same image gives the same tokens in each)."""
    appids = ["test_app", "groups_app", "tenant_a", "tenant_b", "spec_examples"]
    appids += ["prefix_" + p.strip("/").replace("/", "_").replace("-", "_") for p in PREFIXES]
    body = {**image(MISC / GROUP_PHOTO), "max_face_num": 10}
    per_appid = [call(server, "face/detect", body, appid)["face_list"] for appid in appids]
    tokens = [f["face_token"] for f in per_appid[0]]
    assert all([f["face_token"] for f in faces] == tokens for faces in per_appid)
    return tokens


def test_user_list_paging(server: Client, crowd_tokens: list[str]) -> None:
    g = "paging"
    names = ["zeta", "alpha", "mike", "bravo", "yankee", "echo", "kilo"][: len(crowd_tokens)]
    for name, t in zip(names, crowd_tokens):
        call(server, "face/add", {**token(t), "group_id": g, "user_id": name})
    full = call(server, "user/list", {"group_id": g})["user_id_list"]
    assert sorted(full) == sorted(names) and len(full) == len(names)
    assert call(server, "user/list", {"group_id": g, "start": 0, "length": 100}) == {
        "user_id_list": full
    }
    assert call(server, "group/getusers", {"group_id": g})["user_id_list"] == full
    pages = [
        call(server, "user/list", {"group_id": g, "start": s, "length": 3})["user_id_list"]
        for s in range(0, len(full), 3)
    ]
    assert all(len(p) == 3 for p in pages[:-1]) and [u for p in pages for u in p] == full
    assert call(server, "user/list", {"group_id": g, "start": len(full)})["user_id_list"] == []
    assert call(server, "user/list", {"group_id": g})["user_id_list"] == full  # stable


def test_user_delete(server: Client, crowd_tokens: list[str]) -> None:
    t1, t2 = crowd_tokens[0], crowd_tokens[1]
    for g in ("del_a", "del_b", "del_c"):
        call(server, "face/add", {**token(t1), "group_id": g, "user_id": "victim"})
        call(server, "face/add", {**token(t2), "group_id": g, "user_id": "bystander"})
    assert call(server, "user/delete", {"group_id": "del_a", "user_id": "victim"}) is None
    assert call(server, "user/list", {"group_id": "del_a"})["user_id_list"] == ["bystander"]
    groups = call(server, "user/get", {"group_id": "@ALL", "user_id": "victim"})["user_list"]
    assert sorted(u["group_id"] for u in groups) == ["del_b", "del_c"]
    hits = call(
        server, "face/identify", {**token(t1), "group_id_list": "del_a,del_b", "max_user_num": 5}
    )["user_list"]
    assert ("del_a", "victim") not in {(u["group_id"], u["user_id"]) for u in hits}
    call(server, "user/delete", {"group_id": "@ALL", "user_id": "victim"})
    error(server, "user/get", {"group_id": "@ALL", "user_id": "victim"}, 223103)
    for g in ("del_a", "del_b", "del_c"):
        assert call(server, "user/list", {"group_id": g})["user_id_list"] == ["bystander"]


def test_groups(server: Client, crowd_tokens: list[str]) -> None:
    appid = "groups_app"
    names = ["g_c", "g_a", "g_b", "g_d"]
    for g in names:
        assert call(server, "group/add", {"group_id": g}, appid) is None
        assert call(server, "user/list", {"group_id": g}, appid)["user_id_list"] == []
    full = call(server, "group/list", {}, appid)["group_id_list"]
    assert full == sorted(names)
    assert call(server, "group/getlist", {}, appid)["group_id_list"] == full
    page = call(server, "group/list", {"start": 1, "length": 2}, appid)["group_id_list"]
    assert page == full[1:3]
    call(server, "face/add", {**token(crowd_tokens[0]), "group_id": "g_a", "user_id": "u"}, appid)
    assert call(server, "group/delete", {"group_id": "g_a"}, appid) is None
    assert "g_a" not in call(server, "group/list", {}, appid)["group_id_list"]
    deadline = time.monotonic() + 30
    while True:  # deletion runs in the background: 223128 until it is done, then 223100
        env = raw(server, "user/list", {"group_id": "g_a"}, appid).json()
        if env["error_code"] == 223100 or time.monotonic() > deadline:
            break
        assert env["error_code"] == 223128, env
        time.sleep(0.05)
    S.check_error(env, 223100)
    call(server, "group/add", {"group_id": "g_a"}, appid)  # the name is free again, and empty
    assert call(server, "user/list", {"group_id": "g_a"}, appid)["user_id_list"] == []


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_route_under_every_prefix(
    server: Client, crowd_tokens: list[str], prefix: str
) -> None:
    appid = "prefix_" + prefix.strip("/").replace("/", "_").replace("-", "_")
    t1, t2 = crowd_tokens[2], crowd_tokens[3]

    def run(route: str, body: Any) -> Any:
        return call(server, route, body, appid, prefix)

    run("group/add", {"group_id": "g1"})
    run("group/add", {"group_id": "g2"})
    assert run("group/list", {})["group_id_list"] == ["g1", "g2"]
    assert run("group/getlist", {"length": 1})["group_id_list"] == ["g1"]
    assert run("face/detect", token(t1))["face_list"][0]["face_token"] == t1
    assert run("face/match", [token(t1), token(t2)])["score"] < 70
    assert run("face/add", {**token(t1), "group_id": "g1", "user_id": "u1"})["face_token"] == t1
    assert (
        run("face/update", {**token(t2), "group_id": "g1", "user_id": "u1", "user_info": "i"})[
            "face_token"
        ]
        == t2
    )
    hit = {"group_id": "g1", "user_id": "u1", "user_info": "i"}
    for route in ("face/identify", "face/search"):
        users = run(route, {**token(t2), "group_id_list": "g1"})["user_list"]
        assert {k: users[0][k] for k in hit} == hit and users[0]["score"] > 99
    multi = run("face/multi-search", {**token(t2), "group_id_list": "g1"})
    assert multi["face_list"][0]["user_list"][0]["user_id"] == "u1"
    for route in ("face/list", "face/getlist"):
        faces = run(route, {"group_id": "g1", "user_id": "u1"})["face_list"]
        assert [f["face_token"] for f in faces] == [t2]
    for route in ("user/list", "group/getusers"):
        assert run(route, {"group_id": "g1"})["user_id_list"] == ["u1"]
    run("user/copy", {"user_id": "u1", "src_group_id": "g1", "dst_group_id": "g2"})
    users = run("user/get", {"group_id": "@ALL", "user_id": "u1"})["user_list"]
    assert sorted(u["group_id"] for u in users) == ["g1", "g2"]
    run("face/delete", {"group_id": "g2", "user_id": "u1", "face_token": t2})
    assert run("user/list", {"group_id": "g2"})["user_id_list"] == []
    run("user/delete", {"group_id": "g1", "user_id": "u1"})
    assert run("user/list", {"group_id": "g1"})["user_id_list"] == []
    run("group/delete", {"group_id": "g1"})
    assert run("group/list", {})["group_id_list"] == ["g2"]
    caps = httpx.get(f"{server.url}{prefix}/capabilities", timeout=10).json()
    assert caps["error_code"] == 0 and "unsupported" in caps["result"]


def test_appids_are_isolated(server: Client, crowd_tokens: list[str]) -> None:
    a, b = "tenant_a", "tenant_b"
    t = crowd_tokens[4]
    call(
        server, "face/add", {**token(t), "group_id": "shared", "user_id": "u", "user_info": "A"}, a
    )
    assert call(server, "group/list", {}, b)["group_id_list"] == []
    error(server, "user/list", {"group_id": "shared"}, 223100, b)
    error(server, "user/get", {"group_id": "@ALL", "user_id": "u"}, 223103, b)
    error(server, "face/identify", {**token(t), "group_id_list": "shared"}, 223100, b)
    # A's detected faces are not B's: the token is unknown to an appid that never saw the image
    error(server, "face/detect", token(t), 222209, "tenant_c")
    # the same group, user and face in B are B's own: no 223101/223105, A unchanged
    call(
        server, "face/add", {**token(t), "group_id": "shared", "user_id": "u", "user_info": "B"}, b
    )
    assert call(server, "user/get", {"group_id": "shared", "user_id": "u"}, a)["user_list"] == [
        {"user_info": "A", "group_id": "shared"}
    ]
    call(server, "group/delete", {"group_id": "shared"}, b)
    assert call(server, "group/list", {}, a)["group_id_list"] == ["shared"]
    assert call(server, "user/list", {"group_id": "shared"}, a)["user_id_list"] == ["u"]


def test_spec_request_examples(server: Client, crowd_tokens: list[str]) -> None:
    """The request bodies of the spec's examples, verbatim where they are valid requests."""
    appid = "spec_examples"
    t = crowd_tokens[5]
    call(server, "group/add", {"group_id": "group1"}, appid)
    call(
        server,
        "face/add",
        {
            **token(t),
            "group_id": "group1",
            "user_id": "user1",
            "user_info": "abc",
            "quality_control": "LOW",
        },
        appid,
    )
    call(server, "group/add", {"group_id": "group2"}, appid)
    assert call(server, "user/list", {"group_id": "group1"}, appid) == {"user_id_list": ["user1"]}
    assert call(server, "group/list", {"start": 0, "length": 100}, appid) == {
        "group_id_list": ["group1", "group2"]
    }
    faces = call(server, "face/list", {"user_id": "user1", "group_id": "group1"}, appid)
    assert [f["face_token"] for f in faces["face_list"]] == [t]
    call(
        server,
        "user/copy",
        {"user_id": "user1", "src_group_id": "group1", "dst_group_id": "group2"},
        appid,
    )
    assert call(server, "user/get", {"user_id": "user1", "group_id": "group1"}, appid) == {
        "user_list": [{"user_info": "abc", "group_id": "group1"}]
    }
    detected = call(
        server,
        "face/detect",
        {"image": t, "image_type": "FACE_TOKEN", "face_field": "faceshape,facetype"},
        appid,
    )
    assert set(detected["face_list"][0]) == DEFAULT_KEYS
    env = raw(
        server,
        "face/delete",
        {
            "user_id": "user1",
            "group_id": "group1",
            "face_token": "2fa64a88a9d5118916f9a303782a97d3",
        },
        appid,
    ).json()
    S.check_error(env, 223106)  # the example's token is not user1's face
    call(server, "user/delete", {"user_id": "user1", "group_id": "group1"}, appid)
    assert call(server, "user/list", {"group_id": "group1"}, appid) == {"user_id_list": []}
    call(server, "group/delete", {"group_id": "group1"}, appid)


# -------------------------------------------------------------------------- envelope, capabilities


def test_log_ids(server: Client) -> None:
    ids = []
    for i in range(12):
        if i % 3 == 0:
            r = raw(server, "group/list", {})
        elif i % 3 == 1:
            r = raw(server, "user/list", {"group_id": "no_such_group"})
        else:
            r = httpx.post(server.url + "/face-api/v3/no/such/route", timeout=10)
            assert r.status_code == 404
        body = r.json()
        assert r.headers["x-log-id"] == str(body["log_id"])
        assert len(str(body["log_id"])) == 13
        assert abs(body["timestamp"] - time.time()) < 60
        ids.append(body["log_id"])
    assert ids == sorted(set(ids))  # unique and increasing


def test_capabilities(server: Client) -> None:
    r = httpx.get(server.url + "/face-api/v3/capabilities", timeout=10)
    assert r.status_code == 200
    env = r.json()
    assert r.headers["x-log-id"] == str(env["log_id"]) and env["error_code"] == 0
    caps = env["result"]
    unsupported = caps["unsupported"]
    for name in ("beauty", "glasses", "race", "face_shape", "face_type", "parsing", "occlusion"):
        assert isinstance(unsupported[name], str) and unsupported[name], name
    assert SUPPORTED_FIELDS <= set(caps["face_field"])
    assert not set(caps["face_field"]) & set(unsupported)
    assert caps["liveness_control"]["values"] == ["NONE"]  # no liveness model installed
    assert caps["embedding_dim"] == 128


def test_update_with_empty_user_info_clears_it(server: Client, crowd_tokens: list[str]) -> None:
    g, t = "clear_info", crowd_tokens[0]
    call(server, "face/add", {**token(t), "group_id": g, "user_id": "u", "user_info": "old"})
    call(server, "face/update", {**token(t), "group_id": g, "user_id": "u"})  # absent: kept
    assert (
        call(server, "user/get", {"group_id": g, "user_id": "u"})["user_list"][0]["user_info"]
        == "old"
    )
    call(server, "face/update", {**token(t), "group_id": g, "user_id": "u", "user_info": ""})
    assert (
        call(server, "user/get", {"group_id": g, "user_id": "u"})["user_list"][0]["user_info"] == ""
    )


def test_action_type(server: Client) -> None:
    """The public cloud's action_type: add REPLACE replaces an existing user's faces (and adds a
    new user), update REPLACE registers a missing user; the defaults keep the spec's behaviour."""
    app = "action_app"
    one, two = image(lfw("Aaron_Sorkin", 1)), image(lfw("Aaron_Sorkin", 2))
    who = {"group_id": "g", "user_id": "sorkin"}
    first = call(server, "face/add", {**one, **who, "action_type": "REPLACE"}, app)  # new user
    second = call(server, "face/add", {**two, **who}, app)  # APPEND
    faces = call(server, "face/list", who, app)["face_list"]
    assert {f["face_token"] for f in faces} == {first["face_token"], second["face_token"]}
    call(server, "face/add", {**one, **who, "action_type": "replace"}, app)
    faces = call(server, "face/list", who, app)["face_list"]
    assert [f["face_token"] for f in faces] == [first["face_token"]]
    ghost = {"group_id": "g2", "user_id": "ghost"}
    error(server, "face/update", {**two, **ghost}, 223100, app)  # UPDATE: the group must exist
    made = call(server, "face/update", {**two, **ghost, "action_type": "REPLACE"}, app)
    assert [f["face_token"] for f in call(server, "face/list", ghost, app)["face_list"]] == [
        made["face_token"]
    ]
    error(server, "face/add", {**one, **who, "action_type": "MERGE"}, 222001, app)
    error(server, "face/update", {**one, **who, "action_type": "APPEND"}, 222001, app)
