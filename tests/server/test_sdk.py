"""Baidu's own Python SDK (PyPI baidu-aip, aip.AipFace) against a live server, unchanged but for
its host: every AipFace method FaceCore has a route for, in --auth off and --auth required.

The SDK acts on appid A (its key's); the same requests go to the private /face-api routes for appid
B. Each step's two answers must be the same: code, message and result (ctime aside). The SDK's own
URLs are name-mangled attributes; set on an instance, they point that client at the server."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aip import AipFace
from live_server import (
    MISC,
    SHARED,
    Client,
    aip_face,
    b64,
    create_key,
    facecore_cli,
    get_token,
    lfw,
    start_server,
)

pytestmark = pytest.mark.slow

SORKIN, SORKIN_2 = b64(lfw("Aaron_Sorkin", 1)), b64(lfw("Aaron_Sorkin", 2))
PATTERSON = b64(lfw("Aaron_Patterson", 1))
GROUP = b64(MISC / "2007_007763.jpg")  # 7 faces
VIDEO = base64.b64encode((SHARED / "video" / "WDA_AlexandriaOcasioCortez_000.mp4").read_bytes())
FIELDS = "age,gender,expression,emotion,landmark,eye_status,quality,feature,liveness"


class Pair:
    """The server in one mode, an SDK client for appid A, and private-route access to appid B."""

    def __init__(self, client: Client, mode: str, a: dict[str, Any], b: dict[str, Any]) -> None:
        self.client, self.mode, self.url = client, mode, client.url
        self.a, self.b = a, b
        self.sdk = aip_face(self.url, a["api_key"], a["secret_key"])
        # --auth off: B is named in the query; required: B's token says it.
        self.b_query = (
            {"appid": "app_b"} if mode == "off" else {"access_token": get_token(self.url, b)}
        )

    def private(self, path: str, body: Any = None, form: dict[str, Any] | None = None) -> Any:
        url = self.url + (path if path.startswith("/") else f"/face-api/v3/{path}")
        if form is not None:
            r = httpx.post(url, params=self.b_query, data=form, timeout=120)
        else:
            r = httpx.post(url, params=self.b_query, json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module", params=["off", "required"])
def pair(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    liveness_models: Path,
) -> Iterator[Pair]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"sdk-{mode}")
    a, b = create_key(tmp / "data", "app_a"), create_key(tmp / "data", "app_b")
    client = start_server(
        tmp,
        "--auth",
        mode,
        "--models",
        str(liveness_models),
        "--default-appid",
        "sdk_default",
    )
    try:
        yield Pair(client, mode, a, b)
    finally:
        client.stop()


def rest(body: dict[str, Any], *taken: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in taken}


def image(data: str, **extra: Any) -> dict[str, Any]:
    return {"image": data, "image_type": "BASE64", **extra}


Sdk = Callable[[AipFace, Any], Any]
ADD: Sdk = lambda c, b: c.addUser(
    b["image"],
    b["image_type"],
    b["group_id"],
    b["user_id"],
    rest(b, "image", "image_type", "group_id", "user_id"),
)
UPDATE: Sdk = lambda c, b: c.updateUser(
    b["image"],
    b["image_type"],
    b["group_id"],
    b["user_id"],
    rest(b, "image", "image_type", "group_id", "user_id"),
)
DETECT: Sdk = lambda c, b: c.detect(b["image"], b["image_type"], rest(b, "image", "image_type"))
SEARCH: Sdk = lambda c, b: c.search(
    b["image"], b["image_type"], b["group_id_list"], rest(b, "image", "image_type", "group_id_list")
)
MULTI: Sdk = lambda c, b: c.multiSearch(
    b["image"], b["image_type"], b["group_id_list"], rest(b, "image", "image_type", "group_id_list")
)
GET_USER: Sdk = lambda c, b: c.getUser(b["user_id"], b["group_id"])
FACES: Sdk = lambda c, b: c.faceGetlist(b["user_id"], b["group_id"])
USERS: Sdk = lambda c, b: c.getGroupUsers(b["group_id"], rest(b, "group_id"))
COPY: Sdk = lambda c, b: c.userCopy(b["user_id"], rest(b, "user_id"))
FACE_DELETE: Sdk = lambda c, b: c.faceDelete(b["user_id"], b["group_id"], b["face_token"])
USER_DELETE: Sdk = lambda c, b: c.deleteUser(b["group_id"], b["user_id"])
GROUP_ADD: Sdk = lambda c, b: c.groupAdd(b["group_id"])
GROUP_DELETE: Sdk = lambda c, b: c.groupDelete(b["group_id"])
GROUPS: Sdk = lambda c, b: c.getGroupList(b)
MATCH: Sdk = lambda c, b: c.match(b)
VERIFY: Sdk = lambda c, b: c.faceverify(b)


# (what, private route, body, the same through the SDK). Failures are steps too.
STEPS: list[tuple[str, str, Any, Sdk]] = [
    ("group add", "group/add", {"group_id": "g1"}, GROUP_ADD),
    ("group add again (223101)", "group/add", {"group_id": "g1"}, GROUP_ADD),
    ("group add g2", "group/add", {"group_id": "g2"}, GROUP_ADD),
    ("bad group id (222006)", "group/add", {"group_id": "bad-id"}, GROUP_ADD),
    ("add u1", "face/add", image(SORKIN, group_id="g1", user_id="u1", user_info="first"), ADD),
    ("add u2", "face/add", image(PATTERSON, group_id="g1", user_id="u2"), ADD),
    ("add again (223105)", "face/add", image(PATTERSON, group_id="g1", user_id="u2"), ADD),
    (
        "add, no face (222202)",
        "face/add",
        image(b64(MISC / "coffee.png"), group_id="g1", user_id="u3"),
        ADD,
    ),
    (
        "update u1",
        "face/update",
        image(SORKIN_2, group_id="g1", user_id="u1", user_info="second"),
        UPDATE,
    ),
    (
        "add, REPLACE",
        "face/add",
        image(SORKIN, group_id="g1", user_id="u1", action_type="REPLACE"),
        ADD,
    ),
    (
        "update, REPLACE a new user",
        "face/update",
        image(SORKIN_2, group_id="g2", user_id="u5", action_type="REPLACE"),
        UPDATE,
    ),
    (
        "bad action_type (222001)",
        "face/add",
        image(SORKIN, group_id="g1", user_id="u1", action_type="MERGE"),
        ADD,
    ),
    (
        "update a ghost (223103)",
        "face/update",
        image(SORKIN, group_id="g1", user_id="ghost"),
        UPDATE,
    ),
    ("detect every field", "face/detect", image(GROUP, face_field=FIELDS, max_face_num=3), DETECT),
    ("detect peirsol", "face/detect", image(PATTERSON), DETECT),
    (
        "detect garbage (222203)",
        "face/detect",
        image(base64.b64encode(b"not an image").decode()),
        DETECT,
    ),
    ("search", "face/identify", image(SORKIN, group_id_list="g1", max_user_num=2), SEARCH),
    (
        "search a missing group (223100)",
        "face/identify",
        image(SORKIN, group_id_list="nope"),
        SEARCH,
    ),
    (
        "search, liveness control",
        "face/identify",
        image(SORKIN, group_id_list="g1", liveness_control="LOW"),
        SEARCH,
    ),
    ("multi-search", "face/multi-search", image(GROUP, group_id_list="g1", max_face_num=3), MULTI),
    ("match", "face/match", [image(SORKIN), image(SORKIN_2)], MATCH),
    ("match one image (222208)", "face/match", [image(SORKIN)], MATCH),
    ("faceverify", "face/liveness", [image(SORKIN, face_field="age")], VERIFY),
    (
        "faceverify three",
        "face/liveness",
        [image(SORKIN), image(SORKIN_2), image(PATTERSON)],
        VERIFY,
    ),
    ("user get", "user/get", {"user_id": "u1", "group_id": "g1"}, GET_USER),
    ("user get @ALL", "user/get", {"user_id": "u1", "group_id": "@ALL"}, GET_USER),
    ("user get a ghost (223103)", "user/get", {"user_id": "ghost", "group_id": "g1"}, GET_USER),
    ("face list", "face/list", {"user_id": "u1", "group_id": "g1"}, FACES),
    ("group users", "user/list", {"group_id": "g1", "start": 0, "length": 10}, USERS),
    ("group users, bad length (222003)", "user/list", {"group_id": "g1", "length": 0}, USERS),
    ("user copy", "user/copy", {"user_id": "u1", "src_group_id": "g1", "dst_group_id": "g2"}, COPY),
    (
        "copy to nowhere (223111)",
        "user/copy",
        {"user_id": "u1", "src_group_id": "g1", "dst_group_id": "g9"},
        COPY,
    ),
    (
        "face delete",
        "face/delete",
        {"user_id": "u2", "group_id": "g1", "face_token": "PATTERSON"},
        FACE_DELETE,
    ),
    (
        "face delete again (223106)",
        "face/delete",
        {"user_id": "u1", "group_id": "g1", "face_token": "PATTERSON"},
        FACE_DELETE,
    ),
    ("user delete", "user/delete", {"group_id": "g2", "user_id": "u1"}, USER_DELETE),
    ("group list", "group/list", {"start": 0, "length": 10}, GROUPS),
    ("group delete", "group/delete", {"group_id": "g2"}, GROUP_DELETE),
    ("group delete, missing (223100)", "group/delete", {"group_id": "never"}, GROUP_DELETE),
]


def comparable(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope less what differs between any two requests (ids, times, ctime)."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k != "ctime"}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    out: dict[str, Any] = clean(
        {k: v for k, v in envelope.items() if k not in ("log_id", "timestamp")}
    )
    return out


def test_every_sdk_method_answers_as_the_private_route(pair: Pair) -> None:
    codes = []
    for what, route, body, call in STEPS:
        if what.startswith("face delete"):  # Patterson's token: content-derived, alike in A and B
            token = pair.private("face/detect", image(PATTERSON))["result"]["face_list"][0]
            body = {**body, "face_token": token["face_token"]}
        ours = call(pair.sdk, body)
        theirs = pair.private(route, body)
        assert comparable(ours) == comparable(theirs), what
        codes.append(ours["error_code"])
    assert codes.count(0) >= 20 and len(set(codes)) >= 10  # successes and many kinds of failure
    # The SDK's requests went to A's library, the private ones to B's, which are alike.
    a_groups = pair.sdk.getGroupList()["result"]["group_id_list"]
    assert a_groups == pair.private("group/list", {})["result"]["group_id_list"] == ["g1"]


def test_video_liveness(pair: Pair) -> None:
    """videoSessioncode and facelivenessVerifyV1: the public cloud's v1 paths, in the H5 envelope;
    the same video scores the same through the SDK and the private route."""
    ours = pair.sdk.videoSessioncode()
    theirs = pair.private("face/liveness/sessioncode", {})
    assert ours["err_no"] == 0 and ours["err_msg"] == "success" and ours["serverlogid"]
    assert set(ours["result"]) == set(theirs["result"]) == {"session_id", "code"}
    assert len(ours["result"]["code"]) == 4 and ours["result"]["code"].isdigit()
    video = VIDEO.decode()
    ours = pair.sdk.facelivenessVerifyV1(video, {"session_id": ours["result"]["session_id"]})
    theirs = pair.private(
        "/face-api/face/liveness",
        form={"session_id": theirs["result"]["session_id"], "video_base64": video},
    )
    assert ours["err_no"] == theirs["err_no"] == 0
    code_a, code_b = ours["result"].pop("code"), theirs["result"].pop("code")
    assert code_a["identify"] == code_b["identify"] == ""
    assert ours["result"] == theirs["result"] and ours["result"]["score"] > 0.9
    again = pair.sdk.facelivenessVerifyV1(video, {"session_id": "S" + "0" * 22})
    assert again["err_no"] == 222209 and again["result"] is None


def test_unsupported_methods_say_so(pair: Pair) -> None:
    """AipFace methods FaceCore has no route for (identity checks against a police database)."""
    answer = pair.sdk.personVerify(SORKIN, "BASE64", "110101199001011234", "name")
    assert answer["error_code"] == 3 and answer["error_msg"] == "Unsupported openapi method"


def test_wrong_secret(pair: Pair) -> None:
    """The token endpoint refuses the pair, so the SDK signs its requests instead (bce-auth-v1),
    which the server cannot check: 14 in both modes, never the default appid."""
    client = aip_face(pair.url, pair.a["api_key"], "not-the-secret")
    answer = client.groupAdd("by_a_stranger")
    assert answer["error_code"] == 14 and answer["error_msg"] == "IAM Certification failed"
    assert answer["result"] is None
    listed = httpx.post(
        pair.url + "/face-api/v3/group/list", params={"appid": "sdk_default"}, json={}
    ).json()
    assert "by_a_stranger" not in (listed["result"] or {}).get("group_id_list", [])


def test_revoked_key(pair: Pair) -> None:
    """A revoked key's token answers 110. The SDK then asks for a new token, is refused, and
    retries with no credential at all: 110 again where credentials are required."""
    key = create_key(pair.client.data, "app_c")
    client = aip_face(pair.url, key["api_key"], key["secret_key"])
    assert client.groupAdd("c1")["error_code"] == 0
    out = facecore_cli("keys", "revoke", key["api_key"], "--data", str(pair.client.data))
    assert out.returncode == 0, out.stderr
    answer = client.getGroupList()
    if pair.mode == "required":
        assert answer["error_code"] == 110
        assert answer["error_msg"] == "Access token invalid or no longer valid"
    else:  # the bare retry needs no credential here: it lands on the default appid
        assert answer["error_code"] == 0 and "c1" not in answer["result"]["group_id_list"]


def test_a_key_reaches_only_its_appid(pair: Pair) -> None:
    """The SDK's key for A, against B's library: B's group does not exist for it, what it adds goes
    to A, and a URL that names B is refused with 6, whether or not B exists."""
    assert (
        pair.private("face/add", image(SORKIN, group_id="b_only", user_id="bob"))["error_code"] == 0
    )
    c = pair.sdk
    assert "b_only" not in c.getGroupList()["result"]["group_id_list"]
    assert c.getGroupUsers("b_only")["error_code"] == 223100
    assert c.search(SORKIN, "BASE64", "b_only")["error_code"] == 223100
    assert c.addUser(SORKIN, "BASE64", "b_only", "mallory")["error_code"] == 0  # A's own group
    assert c.deleteUser("b_only", "bob")["error_code"] == 223103
    assert c.groupDelete("b_only")["error_code"] == 0
    users = pair.private("user/list", {"group_id": "b_only"})["result"]["user_id_list"]
    assert users == ["bob"]
    for appid in ("app_b", "no_such_app"):
        other = aip_face(pair.url, pair.a["api_key"], pair.a["secret_key"])
        other._AipFace__groupGetlistUrl += f"?appid={appid}"
        other._AipFace__groupDeleteUrl += f"?appid={appid}"
        for answer in (other.getGroupList(), other.groupDelete("b_only")):
            assert (
                answer["error_code"] == 6 and answer["error_msg"] == "No permission to access data"
            )
    assert pair.private("user/list", {"group_id": "b_only"})["result"]["user_id_list"] == ["bob"]


def test_no_secret_reaches_the_log(pair: Pair) -> None:
    """Runs last in this module, for each mode: the keys' secrets and every token the SDK held."""
    log = pair.client.server_log()
    assert '"path":"/rest/2.0/face/v3/detect"' in log
    for secret in (pair.a["secret_key"], pair.b["secret_key"]):
        assert secret not in log
    assert pair.sdk._authObj["access_token"] not in log
    assert "access_token=" not in log and "client_secret=" not in log
