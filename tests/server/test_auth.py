"""Authentication through HTTP: /oauth/2.0/token, access tokens and API key headers, --auth
required and off, the public cloud's codes (110, 111, 14, 6, 18), appid isolation, revocation
through `facecore keys` while the server runs, brute-force limits, the metrics token, and logs
that never hold a secret."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from facecore_server import auth
from live_server import (
    Client,
    aip_face,
    b64,
    create_key,
    facecore_cli,
    get_token,
    lfw,
    start_server,
)
from spec_schemas import spec_message

AUTH_MESSAGES = {
    6: "No permission to access data",
    14: "IAM Certification failed",
    18: "Open api qps request limit reached",
    110: "Access token invalid or no longer valid",
    111: "Access token expired",
}
SORKIN = b64(lfw("Aaron_Sorkin", 1))
SORKIN_2 = b64(lfw("Aaron_Sorkin", 2))
PATTERSON = b64(lfw("Aaron_Patterson", 1))


class Keyed:
    """A server with --auth required, and keys: "a" made before it started (on the store),
    "b" and "a2" while it runs (through the admin socket)."""

    def __init__(self, client: Client, keys: dict[str, dict[str, Any]]) -> None:
        self.client, self.keys = client, keys
        self.url = client.url
        self.tokens = {name: get_token(self.url, key) for name, key in keys.items()}
        self.secrets = [k["secret_key"] for k in keys.values()]

    def call(
        self,
        route: str,
        body: Any = None,
        token: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, Any] | None = None,  # str or raw bytes values
        source: str | None = None,
    ) -> dict[str, Any]:
        """POST a v3 route (or an absolute path) with an optional token; the envelope."""
        query = dict(params or {})
        if token is not None:
            query["access_token"] = token
        path = route if route.startswith("/") else f"/face-api/v3/{route}"
        transport = httpx.HTTPTransport(local_address=source) if source else None
        with httpx.Client(transport=transport, timeout=60) as http:
            r = http.post(self.url + path, params=query, json=body or {}, headers=headers)
        assert r.status_code == 200, r.text
        envelope: dict[str, Any] = r.json()
        return envelope


def token_request(url: str, source: str | None = None, **params: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.get(url + "/oauth/2.0/token", params=params)


def credentials(key: dict[str, Any]) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": key["api_key"],
        "client_secret": key["secret_key"],
    }


def refused(env: dict[str, Any], code: int) -> None:
    assert env["error_code"] == code, env
    assert env["error_msg"] == AUTH_MESSAGES.get(code) or env["error_msg"] == spec_message(code)
    assert env["result"] is None and env["error_detail"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, liveness_models: Path) -> Iterator[Keyed]:
    tmp = tmp_path_factory.mktemp("auth")
    keys = {"a": create_key(tmp / "data", "app_a", "made offline")}
    client = start_server(tmp, "--auth", "required", "--models", str(liveness_models))
    try:
        keys["b"] = create_key(client.data, "app_b", "made online")
        keys["a2"] = create_key(client.data, "app_a")
        yield Keyed(client, keys)
    finally:
        client.stop()


# ---------------------------------------------------------------------------- /oauth/2.0/token


def test_token_endpoint(keyed: Keyed) -> None:
    key = keyed.keys["a"]
    r = token_request(keyed.url, **credentials(key))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["expires_in"] == 30 * 86400 and "brain_all_scope" in body["scope"].split(" ")
    # POST with the parameters in the query (Baidu's documented form) or as a form body.
    post = httpx.post(keyed.url + "/oauth/2.0/token", params=credentials(key), timeout=30)
    form = httpx.post(keyed.url + "/oauth/2.0/token", data=credentials(key), timeout=30)
    tokens = {body["access_token"], post.json()["access_token"], form.json()["access_token"]}
    assert len(tokens) == 3  # random, one per request
    for token in tokens:
        assert keyed.call("group/list", token=token)["error_code"] == 0


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": "x"}, 400, "invalid_request"),
    ],
)
def test_token_endpoint_bad_requests(
    keyed: Keyed, params: dict[str, str], status: int, error: str
) -> None:
    r = token_request(keyed.url, **params)
    assert r.status_code == status and r.json()["error"] == error
    assert r.json()["error_description"]


def test_token_endpoint_bad_forms(keyed: Keyed) -> None:
    url = keyed.url + "/oauth/2.0/token"
    big = httpx.post(url, data={"grant_type": "client_credentials", "pad": "x" * 9000})
    assert big.status_code == 400 and big.json()["error"] == "invalid_request"
    assert "limit" in big.json()["error_description"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"%zz=%%", b"\xff\xfe=1", b"grant_type=client_credentials&&&"):
        r = httpx.post(url, content=body, headers=form)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (body, r.text)
    assert httpx.put(url).json()["error_code"] == 3  # other methods: no such API method


def test_wrong_secret_and_unknown_key_look_the_same(keyed: Keyed) -> None:
    key = keyed.keys["a"]
    wrong = token_request(keyed.url, **{**credentials(key), "client_secret": "x" * 32})
    unknown = token_request(keyed.url, **{**credentials(key), "client_id": "Z" * 24})
    garbage = token_request(keyed.url, **{**credentials(key), "client_id": "../../etc"})
    for r in (wrong, unknown, garbage):
        assert r.status_code == 401
        assert r.json() == {
            "error": "invalid_client",
            "error_description": "Client authentication failed",
        }


# ---------------------------------------------------------------------------- the face routes


def test_required_mode_refuses_requests_without_valid_credentials(keyed: Keyed) -> None:
    a = keyed.keys["a"]
    refused(keyed.call("group/list"), 110)
    refused(keyed.call("group/list", params={"appid": "app_a"}), 110)  # an appid is no credential
    refused(keyed.call("group/list", token="garbage"), 110)
    refused(keyed.call("group/list", token=keyed.tokens["a"][:-2] + "xx"), 110)
    refused(keyed.call("group/list", headers={"X-Api-Key": a["api_key"]}), 14)
    wrong = {"X-Api-Key": a["api_key"], "X-Secret-Key": a["secret_key"][::-1]}
    refused(keyed.call("group/list", headers=wrong), 14)
    signed = {"Authorization": "bce-auth-v1/" + a["api_key"] + "/2026-01-01T00:00:00Z/1800//x"}
    refused(keyed.call("group/list", headers=signed), 14)
    # The public-cloud paths and the H5 routes (in their own envelope) are guarded the same way.
    refused(keyed.call("/rest/2.0/face/v3/faceset/group/getlist"), 110)
    h5 = keyed.call("/rest/2.0/face/v1/faceliveness/sessioncode")
    assert h5["err_no"] == 110 and h5["err_msg"] == AUTH_MESSAGES[110] and h5["result"] is None
    h5 = httpx.post(keyed.url + "/face-api/face/liveness", data={"session_id": "S1"}).json()
    assert h5["err_no"] == 110


GARBAGE = ["", " ", "fc1.", "fc1." + "!" * 43, "钥匙", "a\x00b", "../../etc/passwd", "x" * 6000]


@pytest.mark.parametrize("i", range(len(GARBAGE)))
def test_garbage_credentials(keyed: Keyed, i: int) -> None:
    """Garbage in every credential slot: the documented answer, never a 500 or a 222302. Each
    case comes from its own address, so the failures stay under the address limit."""
    junk = GARBAGE[i]
    source = f"127.0.4.{i + 1}"
    for params in (
        {"grant_type": "client_credentials", "client_id": junk, "client_secret": junk},
        {"grant_type": junk, "client_id": junk, "client_secret": "x"},
        {
            "grant_type": "client_credentials",
            "client_id": keyed.keys["a"]["api_key"],
            "client_secret": junk,
        },
    ):
        r = token_request(keyed.url, source=source, **params)
        assert r.status_code in (400, 401), r.text
        assert r.json()["error"] in ("invalid_request", "unsupported_grant_type", "invalid_client")
    raw = junk.encode().replace(b"\x00", b"").strip() or b"-"  # raw bytes (UTF-8 too)
    for token, headers, code in (
        (junk, {}, 110),
        (None, {"X-Api-Key": raw, "X-Secret-Key": raw}, 14),
        (None, {"X-Api-Key": keyed.keys["a"]["api_key"], "X-Secret-Key": raw}, 14),
    ):
        env = keyed.call("group/list", token=token, headers=headers, source=source)
        refused(env, code)


def test_open_routes_stay_open(keyed: Keyed) -> None:
    for path in ("/health", "/metrics", "/openapi.json"):
        assert httpx.get(keyed.url + path).status_code == 200
    caps = httpx.get(keyed.url + "/face-api/v3/capabilities").json()
    assert caps["error_code"] == 0 and caps["result"]["auth"]["mode"] == "required"


def test_every_credential_sent_must_hold(keyed: Keyed) -> None:
    """A failed credential is never ignored because another one succeeded."""
    a, b = keyed.keys["a"], keyed.keys["b"]
    token_a = keyed.tokens["a"]
    wrong_b = {"X-Api-Key": b["api_key"], "X-Secret-Key": "not-the-secret"}
    refused(keyed.call("group/list", token=token_a, headers=wrong_b), 14)
    right_b = {"X-Api-Key": b["api_key"], "X-Secret-Key": b["secret_key"]}
    refused(keyed.call("group/list", token=token_a, headers=right_b), 6)
    right_a2 = {
        "X-Api-Key": keyed.keys["a2"]["api_key"],
        "X-Secret-Key": keyed.keys["a2"]["secret_key"],
    }
    assert keyed.call("group/list", token=token_a, headers=right_a2)["error_code"] == 0
    refused(keyed.call("group/list", token=token_a, headers={"X-Secret-Key": a["secret_key"]}), 14)
    refused(keyed.call("group/list", headers={"X-Api-Key": a["api_key"]}), 14)
    signed = {"Authorization": "bce-auth-v1/x/2026-01-01T00:00:00Z/1800//y"}
    refused(keyed.call("group/list", token=token_a, headers=signed), 14)


def test_key_headers_and_tokens_act_on_the_keys_appid(keyed: Keyed) -> None:
    a, a2 = keyed.keys["a"], keyed.keys["a2"]
    assert (
        keyed.call("group/add", {"group_id": "shared_name"}, keyed.tokens["a"])["error_code"] == 0
    )
    headers = {"X-Api-Key": a2["api_key"], "X-Secret-Key": a2["secret_key"]}
    for _ in range(2):  # the second check of the pair is the cached one
        env = keyed.call("group/list", headers=headers)
        assert "shared_name" in env["result"]["group_id_list"]
    assert (
        keyed.call("group/list", token=keyed.tokens["a"], params={"appid": "app_a"})["error_code"]
        == 0
    )
    headers = {"X-Api-Key": a["api_key"], "X-Secret-Key": a["secret_key"]}
    refused(keyed.call("group/list", headers=headers, params={"appid": "app_b"}), 6)


def test_a_key_cannot_touch_another_appid(keyed: Keyed) -> None:
    ta, tb = keyed.tokens["a"], keyed.tokens["b"]
    body = {"image": SORKIN, "image_type": "BASE64", "group_id": "iso", "user_id": "u1"}
    assert keyed.call("face/add", body, tb)["error_code"] == 0
    b_before = keyed.call("face/list", {"group_id": "iso", "user_id": "u1"}, tb)["result"]
    other = {"appid": "app_b"}
    image = {"image": SORKIN, "image_type": "BASE64"}
    attempts = [
        ("group/list", {}),
        ("user/list", {"group_id": "iso"}),
        ("user/get", {"group_id": "iso", "user_id": "u1"}),
        ("face/list", {"group_id": "iso", "user_id": "u1"}),
        ("face/identify", {**image, "group_id_list": "iso"}),
        ("face/multi-search", {**image, "group_id_list": "iso"}),
        ("face/add", {**image, "group_id": "iso", "user_id": "intruder"}),
        ("face/update", {**image, "group_id": "iso", "user_id": "u1"}),
        (
            "face/delete",
            {
                "group_id": "iso",
                "user_id": "u1",
                "face_token": b_before["face_list"][0]["face_token"],
            },
        ),
        ("user/delete", {"group_id": "iso", "user_id": "u1"}),
        ("user/copy", {"user_id": "u1", "src_group_id": "iso", "dst_group_id": "iso"}),
        ("group/delete", {"group_id": "iso"}),
        ("face/detect", image),
    ]
    for route, attempt in attempts:
        to_b = keyed.call(route, attempt, ta, other)
        to_nobody = keyed.call(route, attempt, ta, {"appid": "no_such_app"})
        refused(to_b, 6)
        # Whether appid B exists shows nowhere in the answer.
        assert {k: v for k, v in to_b.items() if k not in ("log_id", "timestamp")} == {
            k: v for k, v in to_nobody.items() if k not in ("log_id", "timestamp")
        }
    refused(keyed.call("/rest/2.0/face/v3/faceset/group/getlist", {}, ta, other), 6)
    # Without an appid, A's token acts on A's library, where B's group does not exist.
    assert "iso" not in keyed.call("group/list", {}, ta)["result"]["group_id_list"]
    assert keyed.call("group/delete", {"group_id": "iso"}, ta)["error_code"] == 223100
    assert (
        keyed.call("face/identify", {**image, "group_id_list": "iso"}, ta)["error_code"] == 223100
    )
    # A face B detected is not a token A can use.
    token = keyed.call("face/detect", {"image": PATTERSON, "image_type": "BASE64"}, tb)["result"]
    by_token = {"image": token["face_list"][0]["face_token"], "image_type": "FACE_TOKEN"}
    assert keyed.call("face/detect", by_token, ta)["error_code"] == 222209
    assert keyed.call("face/detect", by_token, tb)["error_code"] == 0
    # B's library is as it was.
    assert keyed.call("face/list", {"group_id": "iso", "user_id": "u1"}, tb)["result"] == b_before
    assert keyed.call("user/list", {"group_id": "iso"}, tb)["result"]["user_id_list"] == ["u1"]


def test_a_video_session_belongs_to_its_appid(keyed: Keyed) -> None:
    session = keyed.call("face/liveness/sessioncode", {}, keyed.tokens["b"])["result"]
    form = {"session_id": session["session_id"], "video_base64": "AAAA"}

    def upload(token: str) -> Any:
        url = keyed.url + "/face-api/face/liveness"
        return httpx.post(url, params={"access_token": token}, data=form, timeout=30).json()

    assert upload(keyed.tokens["a"])["err_no"] == 222209
    # Refusing A did not use B's session up: B gets past the session check (to the video).
    own = upload(keyed.tokens["b"])
    assert own["err_no"] == 222203


def test_the_admin_socket_is_private(keyed: Keyed) -> None:
    sock = keyed.client.data / "admin.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_revoking_a_key_while_the_server_runs(keyed: Keyed) -> None:
    key = create_key(keyed.client.data, "app_a", "to revoke")
    token = get_token(keyed.url, key)
    headers = {"X-Api-Key": key["api_key"], "X-Secret-Key": key["secret_key"]}
    assert keyed.call("group/list", token=token)["error_code"] == 0
    assert keyed.call("group/list", headers=headers)["error_code"] == 0
    out = facecore_cli("keys", "revoke", key["api_key"], "--data", str(keyed.client.data))
    assert out.returncode == 0, out.stderr
    refused(keyed.call("group/list", token=token), 110)
    refused(keyed.call("group/list", headers=headers), 14)
    assert token_request(keyed.url, **credentials(key)).status_code == 401
    listed = facecore_cli("keys", "list", "--appid", "app_a", "--data", str(keyed.client.data))
    states = {
        line.split('"api_key": "')[1][:24]: '"revoked": null' in line
        for line in listed.stdout.splitlines()
    }
    assert states[key["api_key"]] is False and states[keyed.keys["a"]["api_key"]] is True
    # The other keys of the appid keep working.
    assert keyed.call("group/list", token=keyed.tokens["a"])["error_code"] == 0


def test_no_secret_reaches_the_log(keyed: Keyed) -> None:
    """Runs last in this module: every secret and token used above, and none in the log."""
    token_request(keyed.url, **credentials(keyed.keys["b"]))
    keyed.call(
        "group/list", headers={"X-Api-Key": keyed.keys["b"]["api_key"], "X-Secret-Key": "guess"}
    )
    log = keyed.client.server_log()
    assert '"path":"/oauth/2.0/token"' in log and '"error_code":14' in log  # they were logged
    for secret in keyed.secrets:
        assert secret not in log
    for token in keyed.tokens.values():
        assert token not in log
        assert token[4:20] not in log
    assert "access_token=" not in log and "client_secret=" not in log


# ---------------------------------------------------------------------------- expiry and limits


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """Tokens live 2 s; 4 failures per address or 6 per key in 3 s; metrics need a token."""
    tmp = tmp_path_factory.mktemp("strict")
    (tmp / "metrics-token").write_text("m-e-t-r-i-c-s\n")
    keys = {"a": create_key(tmp / "data", "app_a"), "b": create_key(tmp / "data", "app_b")}
    client = start_server(
        tmp,
        "--auth",
        "required",
        "--access-token-seconds",
        "2",
        "--auth-address-failures",
        "4",
        "--auth-key-failures",
        "6",
        "--auth-window",
        "3",
        "--metrics-token-file",
        str(tmp / "metrics-token"),
    )
    try:
        yield Keyed(client, keys)
    finally:
        client.stop()


def test_tokens_expire(strict: Keyed) -> None:
    token = get_token(strict.url, strict.keys["a"])
    assert strict.call("group/list", token=token)["error_code"] == 0
    time.sleep(2.2)
    refused(strict.call("group/list", token=token), 111)
    refused(strict.call("/rest/2.0/face/v3/faceset/group/getlist", token=token), 111)
    assert (
        strict.call("group/list", token=get_token(strict.url, strict.keys["a"]))["error_code"] == 0
    )


def test_the_sdk_is_refused_an_expired_token(strict: Keyed) -> None:
    """The SDK renews a token itself before its expires_in; one it keeps past its expiry (made
    to believe it lives longer) is refused with 111, which the SDK hands back (it renews on
    110 only)."""
    client = aip_face(strict.url, strict.keys["a"]["api_key"], strict.keys["a"]["secret_key"])
    assert client.getGroupList()["error_code"] == 0
    client._authObj["expires_in"] = 10**6
    time.sleep(2.2)
    answer = client.getGroupList()
    assert answer["error_code"] == 111 and answer["error_msg"] == "Access token expired"
    client._authObj["expires_in"] = 0  # now it renews: a new token
    assert client.getGroupList()["error_code"] == 0


def test_failures_are_limited_per_address(strict: Keyed) -> None:
    a = strict.keys["a"]
    fresh = create_key(strict.client.data, "app_c")  # a pair this server has never checked
    proven = {"X-Api-Key": a["api_key"], "X-Secret-Key": a["secret_key"]}  # checked at start
    unproven = {"X-Api-Key": fresh["api_key"], "X-Secret-Key": fresh["secret_key"]}
    attacker, bystander = "127.0.0.3", "127.0.0.4"
    token = get_token(strict.url, a)  # lives 2 s: the failures below take milliseconds
    for _ in range(4):
        refused(strict.call("group/list", token="fc1." + "x" * 43, source=attacker), 110)
    # Past the limit, unproven attempts from that address are not looked at...
    refused(strict.call("group/list", token="fc1." + "z" * 43, source=attacker), 18)
    refused(strict.call("group/list", headers=unproven, source=attacker), 18)
    r = token_request(strict.url, source=attacker, **credentials(fresh))
    assert r.status_code == 429 and r.json()["error"] == "invalid_client"
    assert 1 <= int(r.headers["retry-after"]) <= 4
    # ...but what is proven still works from it (behind NAT, the site's working clients).
    assert strict.call("group/list", token=token, source=attacker)["error_code"] == 0
    assert strict.call("group/list", headers=proven, source=attacker)["error_code"] == 0
    assert strict.call("group/list", headers=unproven, source=bystander)["error_code"] == 0
    time.sleep(3.2)  # the window slides past the failures
    assert token_request(strict.url, source=attacker, **credentials(a)).status_code == 200


def test_failures_are_limited_per_key(strict: Keyed) -> None:
    a, b = strict.keys["a"], strict.keys["b"]
    fresh = create_key(strict.client.data, "app_d")  # never checked: its sign-ins are new
    for key in (a, fresh):
        for i in range(6):  # from six addresses: under each address's limit, over the key's
            r = token_request(
                strict.url,
                source=f"127.0.1.{i + 1}",
                **{**credentials(key), "client_secret": "guess"},
            )
            assert r.status_code == 401
    assert token_request(strict.url, source="127.0.2.1", **credentials(fresh)).status_code == 429
    right = {"X-Api-Key": fresh["api_key"], "X-Secret-Key": fresh["secret_key"]}
    refused(strict.call("group/list", headers=right, source="127.0.2.2"), 18)
    # A pair verified before the attack is not held off by guesses at its key.
    assert token_request(strict.url, source="127.0.2.3", **credentials(a)).status_code == 200
    assert token_request(strict.url, source="127.0.2.3", **credentials(b)).status_code == 200
    time.sleep(3.2)
    assert token_request(strict.url, source="127.0.2.4", **credentials(fresh)).status_code == 200


def test_metrics_token(strict: Keyed) -> None:
    assert httpx.get(strict.url + "/metrics").status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert httpx.get(strict.url + "/metrics", headers=bad).status_code == 401
    good = {"Authorization": "Bearer m-e-t-r-i-c-s"}
    r = httpx.get(strict.url + "/metrics", headers=good)
    assert r.status_code == 200 and "facecore_requests_total" in r.text
    assert httpx.get(strict.url + "/health").status_code == 200


# ---------------------------------------------------------------------------- --auth off


def test_off_mode_checks_the_credentials_it_is_sent(server: Client) -> None:
    """The default mode keeps the spec's behaviour for requests without credentials; a token or
    key that is sent is still checked and binds the request to its appid."""
    key = create_key(server.data, "off_a")
    token = get_token(server.url, key)

    def post(params: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = httpx.post(
            server.url + "/face-api/v3/group/list", params=params, json={}, headers=headers
        )
        envelope: dict[str, Any] = r.json()
        return envelope

    assert post({"appid": "off_b"})["error_code"] == 0
    assert post({"access_token": token})["error_code"] == 0
    assert post({"access_token": token, "appid": "off_a"})["error_code"] == 0
    refused(post({"access_token": token, "appid": "off_b"}), 6)
    refused(post({"access_token": "fc1." + "y" * 43, "appid": "off_b"}), 110)
    refused(post({"appid": "off_b"}, {"X-Api-Key": key["api_key"], "X-Secret-Key": "no"}), 14)
    # A signature is a credential too, one the server cannot check: 14, not the default appid.
    signed = {"Authorization": "bce-auth-v1/x/2026-01-01T00:00:00Z/1800//y"}
    refused(post({"appid": "off_b"}, signed), 14)


def test_off_mode_on_every_interface_warns(tmp_path: Path, server: Client, keyed: Keyed) -> None:
    """--auth off on 0.0.0.0 logs a warning at start; loopback, or --auth required, do not."""
    wide = start_server(tmp_path, "--host", "0.0.0.0")
    try:
        assert "--auth off on 0.0.0.0" in wide.server_log()
    finally:
        wide.stop()
    assert "--auth off on" not in server.server_log()
    assert "--auth off on" not in keyed.client.server_log()


# ---------------------------------------------------------------------------- the limiter alone


def test_failure_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    lim = auth.FailureLimiter(per_address=3, per_key=5, window=10)
    for _ in range(2):
        lim.failed("1.2.3.4")
    assert lim.retry_after("1.2.3.4") == 0
    now[0] += 4
    lim.failed("1.2.3.4")
    assert lim.retry_after("1.2.3.4") == pytest.approx(6)  # the oldest of the three leaves at 1010
    assert lim.retry_after("5.6.7.8") == 0
    now[0] += 6
    assert lim.retry_after("1.2.3.4") == 0
    for i in range(5):  # five addresses, one failure each, all on one key
        lim.failed(f"10.0.0.{i}", "KEY")
    assert lim.retry_after("10.0.0.9", "KEY") == pytest.approx(10)
    assert lim.retry_after("10.0.0.9", "OTHER") == 0
    assert lim.retry_after("10.0.0.9") == 0


def test_failure_limiter_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_MAX_BUCKETS", 100)
    now = [0.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    lim = auth.FailureLimiter(per_address=2, per_key=2, window=10)
    for i in range(100):
        lim.failed(f"a{i}")
    now[0] = 11  # all of them are old now: the next new address sweeps them out
    lim.failed("fresh")
    assert len(lim._addresses) == 1
    for i in range(200):  # a flood of fresh addresses inside one window: the table starts over
        lim.failed(f"b{i}")
    assert len(lim._addresses) <= 100
