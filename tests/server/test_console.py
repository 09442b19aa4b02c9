"""The web console (/console/, docs/console.md).

Over plain HTTP, without a browser: the security headers on every /console response, pages with
no inline script or style, the installed tree carrying every static file, and the console's JSON
endpoints: authenticated as the v3 routes are, answering the spec's codes, and key management's
rules (who may, cross-site refusals).

In a real headless Chromium driven by Playwright (Debian's `chromium`; these skip, saying why,
without Playwright or a Chromium): three LFW people enrolled by dropping photos on the library
page and listed with their thumbnails, each found first by a search with another photo of them,
a detection drawn where the API's boxes and landmarks are, a match scored, a key created (its
secret shown once) and revoked, and, under --auth required, a wrong secret refused and the right
one signing in to its own appid only. No page may log an error (a CSP violation is one).

Each page's screenshot goes to a pytest directory, and also to $FACECORE_CONSOLE_SCREENSHOTS
when set (`FACECORE_CONSOLE_SCREENSHOTS=docs/console` makes the README's pictures).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import facecore_server
import httpx
import pytest
from facecore.score import SCORE_AT_FAR
from live_server import LFW, MISC, Client, b64, create_key, get_token, photos, start_server

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "python" / "server" / "static"
INSTALLED = Path(facecore_server.__file__).parent / "static"
PEOPLE = ("Andre_Agassi", "Colin_Powell", "Tony_Blair")
SCREENSHOTS = "FACECORE_CONSOLE_SCREENSHOTS"
VIEWPORT = {"width": 1024, "height": 700}


def api(server: Client, path: str, **params: str) -> dict[str, Any]:
    """GET /console/api/{path}; the envelope."""
    r = httpx.get(f"{server.url}/console/api/{path}", params=params, timeout=30)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def code(answer: dict[str, Any]) -> int:
    return int(answer["error_code"])


# ---------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def required(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A server with --auth required (a high failure limit: the tests fail on purpose)."""
    client = start_server(
        tmp_path_factory.mktemp("console-required"),
        "--auth",
        "required",
        "--auth-address-failures",
        "1000",
    )
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture(scope="module")
def tenants(required: Client) -> dict[str, dict[str, Any]]:
    """Keys of two appids on the --auth required server, each with a group of its own."""
    keys = {appid: create_key(required.data, appid, f"{appid} key") for appid in ("ten_a", "ten_b")}
    for appid, key in keys.items():
        key["token"] = get_token(required.url, key)
        r = httpx.post(
            f"{required.url}/face-api/v3/group/add",
            params={"access_token": key["token"]},
            json={"group_id": f"{appid}_group"},
            timeout=30,
        )
        assert r.json()["error_code"] == 0, r.text
    return keys


# ---------------------------------------------------------------------------- plain HTTP


def test_every_console_response_carries_the_security_headers(live: Client) -> None:
    responses = {
        "redirect": httpx.get(f"{live.url}/console", timeout=30),
        "page": httpx.get(f"{live.url}/console/", timeout=30),
        "module": httpx.get(f"{live.url}/console/js/library.js", timeout=30),
        "style": httpx.get(f"{live.url}/console/console.css", timeout=30),
        "answer": httpx.get(f"{live.url}/console/api/thresholds", timeout=30),
        "error": httpx.get(f"{live.url}/console/api/groups", timeout=30),
        "404": httpx.get(f"{live.url}/console/api/nothing", timeout=30),
        "missing file": httpx.get(f"{live.url}/console/js/nothing.js", timeout=30),
        "405": httpx.delete(f"{live.url}/console/api/groups", timeout=30),
    }
    for name, r in responses.items():
        csp = r.headers.get("content-security-policy", "")
        assert "script-src 'self';" in csp and "style-src 'self';" in csp, name
        assert "img-src 'self' blob: data:;" in csp and "default-src 'none'" in csp, name
        assert "unsafe" not in csp, name  # no inline script, no eval
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["x-frame-options"] == "DENY", name
        assert r.headers["referrer-policy"] == "no-referrer", name
    assert responses["redirect"].status_code == 308
    assert responses["redirect"].headers["location"] == "/console/"
    assert "<title>Library" in responses["page"].text
    assert responses["module"].headers["content-type"].split(";")[0] in (
        "text/javascript",
        "application/javascript",
    )
    assert responses["answer"].headers["cache-control"] == "no-store"
    assert responses["page"].headers["cache-control"] == "no-cache"
    assert code(responses["error"].json()) == 222001  # no appid
    for name in ("404", "missing file", "405"):  # the v3 envelope, with the status
        assert code(responses[name].json()) == 3, name
    assert responses["404"].status_code == 404 and responses["405"].status_code == 405


class _Markup(HTMLParser):
    """What a page's markup would need 'unsafe-inline' for."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.found += [f"<{tag} {k}>" for k in named if k.startswith("on") or k == "style"]
        if tag == "style":
            self.found.append("<style>")
        if tag == "script":
            self.scripts.append(named)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append(f"inline script {data.strip()[:40]!r}")


def test_pages_need_no_inline_script_style_or_eval() -> None:
    pages = sorted(STATIC.glob("*.html"))
    assert [p.name for p in pages] == ["index.html", "ops.html", "try.html"]
    for page in pages:
        markup = _Markup()
        markup.feed(page.read_text())
        assert not markup.found, (page.name, markup.found)
        assert markup.scripts == [{"type": "module", "src": f"js/{page_module(page)}.js"}]
    for module in sorted(STATIC.glob("js/*.js")):
        source = module.read_text()
        for banned in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML"):
            assert banned not in source, (module.name, banned)
        assert not re.search(r"""setAttribute\(\s*["']style""", source), module.name
        assert "localStorage" not in source, module.name  # the session ends with the tab


def page_module(page: Path) -> str:
    return {"index.html": "library", "try.html": "try", "ops.html": "ops"}[page.name]


def test_the_installed_package_carries_every_static_file() -> None:
    """`make install` is not editable: the server serves what the wheel carried."""
    files = sorted(p.relative_to(STATIC) for p in STATIC.rglob("*") if p.is_file())
    assert len(files) >= 13
    for rel in files:
        installed = INSTALLED / rel
        assert installed.is_file(), f"{rel} is not installed: rerun `make install`"
        digest = hashlib.sha256((STATIC / rel).read_bytes()).hexdigest()
        assert hashlib.sha256(installed.read_bytes()).hexdigest() == digest, rel


def test_endpoints_authenticate_as_the_v3_routes(
    required: Client, tenants: dict[str, dict[str, Any]]
) -> None:
    a, b = tenants["ten_a"], tenants["ten_b"]
    for path in ("appids", "groups", "users", "face/image", "thresholds", "models", "metrics"):
        assert code(api(required, path)) == 110, path  # no credential
        assert code(api(required, path, access_token="fc1." + "x" * 43)) == 110, path
    assert code(api(required, "groups", access_token=a["token"], appid="ten_b")) == 6
    mine = api(required, "groups", access_token=a["token"])["result"]
    assert mine == {"group_num": 1, "group_list": [{"group_id": "ten_a_group", "face_num": 0}]}
    assert api(required, "appids", access_token=b["token"])["result"] == {
        "appid_list": ["ten_b"],
        "bound": True,
    }
    pair = {"X-Api-Key": a["api_key"], "X-Secret-Key": a["secret_key"]}
    r = httpx.get(f"{required.url}/console/api/groups", headers=pair, timeout=30)
    assert r.json()["result"]["group_list"][0]["group_id"] == "ten_a_group"
    wrong = {**pair, "X-Secret-Key": "0" * 32}
    r = httpx.get(f"{required.url}/console/api/groups", headers=wrong, timeout=30)
    assert code(r.json()) == 14


@pytest.fixture(scope="module")
def enrolled_by_api(live: Client) -> dict[str, list[str]]:
    """Two users of appid console_http, group people, enrolled through face/add: user -> its
    face tokens."""
    tokens: dict[str, list[str]] = {}
    for person in PEOPLE[:2]:
        for photo in photos(person)[:2]:
            body = {"image": b64(photo), "image_type": "BASE64", "group_id": "people"}
            body |= {"user_id": person, "user_info": person.replace("_", " ")}
            result = live.ok("face/add", body, appid="console_http")
            tokens.setdefault(person, []).append(result["face_token"])
    return tokens


def test_users_page_lists_each_user_with_its_faces(
    live: Client, enrolled_by_api: dict[str, list[str]]
) -> None:
    page = api(live, "users", appid="console_http", group_id="people")["result"]["user_list"]
    assert [u["user_id"] for u in page] == sorted(enrolled_by_api)
    for u in page:
        listed = live.ok(
            "face/list", {"group_id": "people", "user_id": u["user_id"]}, "console_http"
        )
        assert u["face_list"] == listed["face_list"]
        assert sorted(f["face_token"] for f in u["face_list"]) == sorted(
            enrolled_by_api[u["user_id"]]
        )
        assert u["user_info"] == u["user_id"].replace("_", " ")
    second = api(live, "users", appid="console_http", group_id="people", start="1", length="1")
    assert [u["user_id"] for u in second["result"]["user_list"]] == [sorted(enrolled_by_api)[1]]
    groups = api(live, "groups", appid="console_http")["result"]
    assert groups == {"group_num": 1, "group_list": [{"group_id": "people", "face_num": 4}]}
    assert "console_http" in api(live, "appids")["result"]["appid_list"]


def test_registration_image_is_the_stored_crop(
    live: Client, enrolled_by_api: dict[str, list[str]]
) -> None:
    from PIL import Image

    token = enrolled_by_api[PEOPLE[0]][0]
    r = httpx.get(
        f"{live.url}/console/api/face/image",
        params={"appid": "console_http", "group_id": "people", "face_token": token},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"].startswith("private")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "JPEG" and 40 <= im.width <= 400
    # another appid does not see it
    other = api(live, "face/image", appid="someone_else", group_id="people", face_token=token)
    assert code(other) == 223100


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("groups", {}, 222001),  # no appid, no --default-appid
        ("groups", {"appid": "bad appid"}, 222014),
        ("groups", {"appid": "console_http", "start": "-1"}, 222002),
        ("groups", {"appid": "console_http", "length": "1001"}, 222003),
        ("users", {"appid": "console_http"}, 222001),
        ("users", {"appid": "console_http", "group_id": "bad-group"}, 222006),
        ("users", {"appid": "console_http", "group_id": "no_such_group"}, 223100),
        ("users", {"appid": "console_http", "group_id": "people", "length": "0"}, 222003),
        ("face/image", {"appid": "console_http", "group_id": "people"}, 222001),
        ("face/image", {"appid": "console_http", "group_id": "people", "face_token": "x"}, 222025),
        (
            "face/image",
            {"appid": "console_http", "group_id": "people", "face_token": "0" * 32},
            223106,
        ),
    ],
)
def test_bad_input_answers_the_spec_codes(
    live: Client,
    enrolled_by_api: dict[str, list[str]],
    path: str,
    params: dict[str, str],
    expected: int,
) -> None:
    answer = api(live, path, **params)
    assert code(answer) == expected, answer
    assert answer["result"] is None and answer["error_detail"]


def test_thresholds_models_and_metrics(live: Client) -> None:
    thresholds = api(live, "thresholds")["result"]
    assert thresholds["score_at_far"] == {f"{far:g}": s for far, s in SCORE_AT_FAR.items()}
    assert thresholds["score_at_far"]["0.0001"] == 80
    models = api(live, "models")["result"]
    manifest = json.loads((Path(models["models_dir"]) / "manifest.json").read_text())
    assert [m["role"] for m in models["model_list"]] == sorted(manifest["models"])
    assert models["liveness"] is True  # the live server has the liveness models
    live.ok("group/list", {}, "console_metrics")
    snap = api(live, "metrics")["result"]
    assert snap["requests"]["group/list"]["0"] >= 1
    assert snap["latency_buckets"][-1] is None
    assert all(len(c) == len(snap["latency_buckets"]) for c in snap["latency"].values())
    assert all(c == sorted(c) for c in snap["latency"].values())  # cumulative
    assert snap["busy_code"] == 222901 and snap["busy"] >= 0
    assert "console_metrics" not in json.dumps(snap)  # no appid in it: /metrics keeps those


# ---------------------------------------------------------------------------- key management


def keys_call(
    server: Client,
    path: str = "keys",
    body: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """GET (no body) or POST (a JSON body) /console/api/{path}; the envelope."""
    url = f"{server.url}/console/api/{path}"
    if body is None:
        r = httpx.get(url, params=params, headers=headers, timeout=30)
    else:
        r = httpx.post(url, params=params, json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_keys_from_this_machine_without_a_credential(live: Client) -> None:
    """--auth off: a caller on loopback manages any appid's keys, as `facecore keys` does."""
    made = keys_call(live, body={"name": "gate 3"}, params={"appid": "console_keys"})
    assert code(made) == 0
    key = made["result"]
    assert key["appid"] == "console_keys" and len(key["secret_key"]) == 32
    token = get_token(live.url, key)  # the secret works
    listed = keys_call(live, params={"appid": "console_keys"})["result"]["key_list"]
    assert [k["api_key"] for k in listed] == [key["api_key"]]
    assert "secret_key" not in json.dumps(listed) and key["secret_key"] not in json.dumps(listed)
    assert key["api_key"] in json.dumps(keys_call(live)["result"])  # every appid's
    # the key binds: with its token, the console acts on its appid only
    assert code(keys_call(live, params={"access_token": token, "appid": "other"})) == 6
    revoked = keys_call(live, "keys/revoke", {"api_key": key["api_key"]})
    assert revoked["result"] == {"api_key": key["api_key"], "tokens_removed": 1}
    r = httpx.get(
        f"{live.url}/oauth/2.0/token",
        params={"grant_type": "client_credentials", "client_id": key["api_key"]}
        | {"client_secret": key["secret_key"]},
        timeout=30,
    )
    assert r.status_code == 401
    listed = keys_call(live, params={"appid": "console_keys"})["result"]["key_list"]
    assert listed[0]["revoked"] is not None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Host": "console.example.com"}, 6),  # a DNS-rebinding page
        ({"X-Forwarded-For": "203.0.113.9"}, 6),  # relayed by a proxy on this machine
        ({"Forwarded": "for=203.0.113.9"}, 6),
        ({"Origin": "http://evil.example"}, 6),  # cross-site, before the body is read
        ({"Sec-Fetch-Site": "cross-site"}, 6),
        ({"Content-Type": "text/plain"}, 222001),  # what a foreign form can post unasked
    ],
)
def test_keys_refuse_what_is_not_this_machine_or_this_site(
    live: Client, headers: dict[str, str], expected: int
) -> None:
    url = f"{live.url}/console/api/keys?appid=console_keys"
    r = httpx.post(
        url,
        content=b'{"name": "x"}',
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )
    assert code(r.json()) == expected, r.text
    if (
        "Content-Type" not in headers
        and "Origin" not in headers
        and "Sec-Fetch-Site" not in headers
    ):
        listed = httpx.get(url, headers=headers, timeout=30).json()
        assert code(listed) == 6  # listing is refused the same


def test_keys_bad_input(live: Client) -> None:
    long = keys_call(live, body={"name": "n" * 129}, params={"appid": "console_keys"})
    assert code(long) == 222001 and long["error_msg"] == "param[] is null"
    assert code(keys_call(live, body={"name": "x"})) == 222001  # no appid
    missing = keys_call(live, "keys/revoke", {})
    assert code(missing) == 222001 and missing["error_msg"] == "param[api_key] is null"
    assert code(keys_call(live, "keys/revoke", {"api_key": "A" * 24})) == 6
    assert code(keys_call(live, "keys/revoke", {"api_key": 5})) == 6
    r = httpx.post(
        f"{live.url}/console/api/keys/revoke",
        content=b"[1]",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert code(r.json()) == 222001


def test_a_key_manages_its_own_appids_keys_only(
    required: Client, tenants: dict[str, dict[str, Any]]
) -> None:
    a, b = tenants["ten_a"], tenants["ten_b"]
    as_a = {"access_token": a["token"]}
    assert code(keys_call(required, body={"name": "x"})) == 110  # no credential
    listed = keys_call(required, params=as_a)["result"]["key_list"]
    assert {k["appid"] for k in listed} == {"ten_a"}
    made = keys_call(required, body={"name": "made by a"}, params=as_a)["result"]
    assert made["appid"] == "ten_a"
    assert code(keys_call(required, body={"name": "x"}, params={**as_a, "appid": "ten_b"})) == 6
    refused = keys_call(required, "keys/revoke", {"api_key": b["api_key"]}, as_a)
    assert code(refused) == 6 and "of this appid" in refused["error_detail"]
    assert get_token(required.url, b)  # b's key untouched
    done = keys_call(required, "keys/revoke", {"api_key": made["api_key"]}, as_a)
    assert code(done) == 0


# ---------------------------------------------------------------------------- the browser


def chromium() -> str | None:
    """Debian's Chromium (or $FACECORE_CHROMIUM)."""
    found = os.environ.get("FACECORE_CHROMIUM") or shutil.which("chromium")
    return found if found and Path(found).exists() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (the test extra of pyproject.toml)")
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium: `apt-get install chromium` (.ci/run does where it can)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Screenshots of the pages, kept small (a 256-colour PNG): always in a pytest directory,
    and in $FACECORE_CONSOLE_SCREENSHOTS when it is set."""

    def __init__(self, home: Path) -> None:
        self.dirs = [home]
        if os.environ.get(SCREENSHOTS):
            self.dirs.append(Path(os.environ[SCREENSHOTS]))

    def take(self, page: Any, name: str) -> None:
        from PIL import Image

        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        small = shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
            small.save(d / f"{name}.png", optimize=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("console-screenshots"))


class Page:
    """A browser page on a server, failing the test on any error it logs."""

    def __init__(self, browser: Any, server: Client) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.server = server
        self.errors: list[str] = []
        self.allowed: list[str] = []  # errors a test provokes on purpose (a substring of each)
        self.requests: list[tuple[str, str]] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append((r.url, r.post_data or "")))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def open(self, path: str, appid: str | None = None) -> Any:
        """Go to /console/{path}; `appid`: choose it first, as a user does under --auth off."""
        self.page.goto(f"{self.server.url}/console/{path}")
        if appid is not None:
            self.page.fill("#new-appid", appid)
            self.page.click("#appid-form button[type=submit]")
        return self.page

    def close(self) -> None:
        self.context.close()
        unexpected = [e for e in self.errors if not any(a in e for a in self.allowed)]
        assert not unexpected, unexpected


@pytest.fixture
def page(browser: Any, live: Client) -> Iterator[Page]:
    p = Page(browser, live)
    yield p
    p.close()


APPID = "console_ui"


def show_group(page: Any, group: str) -> None:
    """Click `group` in the list and wait for its pane: the page keeps the group it shows until
    the clicked one's users have come, then swaps both panes in at once."""
    page.click(f'button.group-item[data-group="{group}"]')
    page.wait_for_selector(f'button.group-item[data-group="{group}"][aria-current="true"]')


def drop(page: Any, target: str, files: list[Path]) -> None:
    """Drop `files` on `target`: a drop event carrying them in its DataTransfer."""
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            }
            return transfer;
        }""",
        [[f.name, b64(f)] for f in files],
    )
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


@pytest.fixture(scope="module")
def enrolled(browser: Any, live: Client) -> dict[str, list[str]]:
    """Three people enrolled through the library page, two photos each, into group staff of
    appid console_ui: what the page showed, user -> the face tokens of its thumbnails."""
    p = Page(browser, live)
    page = p.open("", APPID)
    page.fill("#new-group", "staff")
    page.click("#group-form button")
    page.wait_for_selector("#add-form")
    for n, person in enumerate(PEOPLE):
        page.fill("#add-user-id", person)
        if n == 0:  # dropped on the zone, as a file manager drops them
            drop(page, "#add-form label.drop", photos(person)[:2])
        else:  # picked with the zone's file dialog
            page.set_input_files("#add-photos", [str(f) for f in photos(person)[:2]])
        page.wait_for_selector("#add-form .chosen img.thumb")
        page.click("#add-submit")
        page.wait_for_selector(f'article[data-user="{person}"] img.thumb', timeout=120_000)
    shown = {}
    for person in PEOPLE:
        card = page.locator(f'article[data-user="{person}"]')
        shown[person] = card.locator("img.thumb").evaluate_all(
            "els => els.map(e => e.dataset.token)"
        )
    p.close()
    return shown


def test_library_lists_the_people_enrolled_through_the_page(
    page: Page, live: Client, enrolled: dict[str, list[str]], shots: Shots
) -> None:
    for person in PEOPLE:
        listed = live.ok("face/list", {"group_id": "staff", "user_id": person}, APPID)["face_list"]
        assert sorted(enrolled[person]) == sorted(f["face_token"] for f in listed)
        assert len(listed) == 2
    p = page.open("#group=staff", APPID)
    p.wait_for_selector('article[data-user="Tony_Blair"]')
    assert p.locator("article.user .user-id").all_inner_texts() == sorted(PEOPLE)
    assert p.inner_text("#group-faces") == "6 faces"
    thumbs = p.locator("article.user img.thumb")
    assert thumbs.count() == 6
    p.wait_for_function("() => [...document.querySelectorAll('img.thumb')].every(i => i.complete)")
    sizes = thumbs.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert all(w > 40 and h > 40 for w, h in sizes), sizes  # each loaded, a real crop
    shots.take(p, "library")


def test_library_copies_deletes_and_confirms(
    page: Page, live: Client, enrolled: dict[str, list[str]]
) -> None:
    """Copy a user to another group, delete one of its faces there, find it, and delete that
    group: each through its v3 route, each destructive step after a confirmation (and not
    without: Cancel keeps the group)."""
    person = "Tony_Blair"
    p = page.open("#group=staff", APPID)
    p.wait_for_selector(f'article[data-user="{person}"]')
    p.fill("#new-group", "visitors")
    p.click("#group-form button")
    p.wait_for_selector("#users-range:has-text('no users here')")
    show_group(p, "staff")
    card = p.locator(f'article[data-user="{person}"]')
    card.locator("select.copy-target").select_option("visitors")
    card.locator("button", has_text="Copy").click()
    p.wait_for_selector('button.group-item[data-group="visitors"]:has-text("2 faces")')
    copied = live.ok("face/list", {"group_id": "visitors", "user_id": person}, APPID)
    assert sorted(f["face_token"] for f in copied["face_list"]) == sorted(enrolled[person])

    show_group(p, "visitors")
    card = p.locator(f'article[data-user="{person}"]')
    card.locator("figure.face").first.locator("button").click()
    p.click("dialog.confirm button[value=ok]")
    p.wait_for_selector('button.group-item[data-group="visitors"]:has-text("1 face")')
    # the count and the cards come in one swap: they agree whenever either is seen
    assert card.locator("img.thumb").count() == 1
    left = live.ok("face/list", {"group_id": "visitors", "user_id": person}, APPID)
    assert len(left["face_list"]) == 1
    assert (
        len(live.ok("face/list", {"group_id": "staff", "user_id": person}, APPID)["face_list"]) == 2
    )

    p.fill("#find-user-id", "Colin_Powell")  # not in visitors
    p.click("#find-form button")
    p.wait_for_selector("#users .msg.error:has-text('user is not exist')")
    p.fill("#find-user-id", person)
    p.click("#find-form button")
    p.wait_for_selector(f'#users article[data-user="{person}"]')

    p.click("#delete-group")
    p.click("dialog.confirm button[value=cancel]")
    assert "visitors" in live.ok("group/list", {}, APPID)["group_id_list"]
    p.click("#delete-group")
    assert "visitors" in p.inner_text("dialog.confirm p")
    p.click("dialog.confirm button[value=ok]")
    p.wait_for_selector('button.group-item[data-group="visitors"]', state="detached")
    assert live.ok("group/list", {}, APPID)["group_id_list"] == ["staff"]


def test_a_group_loading_leaves_the_shown_group_acted_on(
    page: Page, live: Client, enrolled: dict[str, list[str]]
) -> None:
    """While the users of a clicked group are on their way (held here), the page keeps showing
    the group it was on, and a face deleted from that page is deleted from that group, not from
    the one loading."""
    person = "Colin_Powell"
    live.ok("group/add", {"group_id": "guests"}, APPID)
    live.ok(
        "user/copy", {"user_id": person, "src_group_id": "staff", "dst_group_id": "guests"}, APPID
    )
    try:
        p = page.open("#group=guests", APPID)
        card = p.locator(f'article[data-user="{person}"]')
        card.wait_for()
        held: list[Any] = []  # the users requests, until released
        releasing = False

        def hold(route: Any) -> None:
            if releasing:
                route.continue_()
            else:
                held.append(route)

        p.route("**/console/api/users?*", hold)
        with p.expect_request(lambda r: "/console/api/users?" in r.url and "staff" in r.url):
            p.click('button.group-item[data-group="staff"]')
        assert p.inner_text("#group h1") == "guests"  # still: staff's users have not come
        card.locator("figure.face").first.locator("button").click()
        with p.expect_response(lambda r: "face/delete" in r.url):
            p.click("dialog.confirm button[value=ok]")
        releasing = True
        for route in held:
            route.continue_()
        p.wait_for_selector('button.group-item[data-group="staff"][aria-current="true"]')
        assert p.inner_text("#group h1") == "staff"
        assert card.locator("img.thumb").count() == 2
        listed = live.ok("face/list", {"group_id": "guests", "user_id": person}, APPID)
        assert len(listed["face_list"]) == 1
        staff = live.ok("face/list", {"group_id": "staff", "user_id": person}, APPID)
        assert sorted(f["face_token"] for f in staff["face_list"]) == sorted(enrolled[person])
    finally:
        live.ok("group/delete", {"group_id": "guests"}, APPID)


def test_library_pages_groups_and_users_and_deletes_a_user(page: Page, live: Client) -> None:
    """101 groups and 51 users, one more of each than a page holds: the pagers reach the last of
    each and stop there. A user is deleted with its faces after a confirmation (Cancel keeps it),
    and the page it was alone on gives way to the one before."""
    appid = "console_pages"
    groups = [f"g{n:03d}" for n in range(101)]
    for group in groups:
        live.ok("group/add", {"group_id": group}, appid)
    users = [f"u{n:03d}" for n in range(51)]
    faces = sorted(LFW.glob("*/*.jpg"))[: len(users)]  # a face is in a group once: 51 photos
    for user, photo in zip(users, faces, strict=True):
        body = {"image": b64(photo), "image_type": "BASE64", "group_id": "g000"}
        live.ok("face/add", body | {"user_id": user}, appid)

    p = page.open("#group=g000", appid)
    p.wait_for_selector('article[data-user="u049"]')
    assert p.locator("button.group-item").all_inner_texts()[0].split() == ["g000", "51", "faces"]
    assert p.locator("button.group-item").count() == 100
    assert p.inner_text("#groups .pager span") == "1–100 of 101"
    p.click("#groups .pager button:has-text('›')")
    p.wait_for_selector('button.group-item[data-group="g100"]')
    assert p.locator("button.group-item").count() == 1
    assert p.locator("#groups .pager button:has-text('›')").is_disabled()
    p.click("#groups .pager button:has-text('‹')")
    p.wait_for_selector('button.group-item[data-group="g000"]')

    assert p.locator("article.user").count() == 50
    assert p.inner_text("#users-range") == "users 1–50"
    assert p.locator("#users-prev").is_disabled()
    p.click("#users-next")
    p.wait_for_selector("#users-range:text-is('users 51–51')")
    assert p.locator("article.user .user-id").all_inner_texts() == ["u050"]
    assert p.locator("#users-next").is_disabled()

    last = p.locator('article[data-user="u050"]')
    last.locator("button", has_text="Delete user").click()
    assert "u050 and their 1 face from g000" in p.inner_text("dialog.confirm p")
    p.click("dialog.confirm button[value=cancel]")
    assert live.ok("face/list", {"group_id": "g000", "user_id": "u050"}, appid)["face_list"]
    last.locator("button", has_text="Delete user").click()
    p.click("dialog.confirm button[value=ok]")
    p.wait_for_selector("#users-range:text-is('users 1–50')")
    assert p.locator("#users-next").is_disabled()  # exactly a page: nothing after it
    assert p.inner_text("#group-faces") == "50 faces"
    gone = live.post("user/get", {"group_id": "g000", "user_id": "u050"}, appid)
    assert gone["error_code"] == 223103
    listed = live.ok("group/getusers", {"group_id": "g000", "length": 100}, appid)
    assert listed["user_id_list"] == users[:50]


def test_search_finds_each_person_first(
    page: Page, live: Client, enrolled: dict[str, list[str]], shots: Shots
) -> None:
    p = page.open("try.html#search", APPID)
    for person in PEOPLE:
        probe = photos(person)[2]  # not one of the two enrolled
        p.set_input_files("#search-photo", str(probe))
        p.wait_for_selector(
            f'#candidates li.candidate:first-child[data-user="{person}"]', timeout=60_000
        )
        first = p.locator("#candidates li.candidate").first
        body = {"image": b64(probe), "image_type": "BASE64", "group_id_list": "staff"}
        best = live.ok("face/identify", body | {"max_user_num": 5}, APPID)["user_list"][0]
        assert best["user_id"] == person
        assert float(first.locator(".score-value").inner_text()) == pytest.approx(
            best["score"], abs=0.051
        )
        assert first.locator("img.thumb").evaluate("e => e.complete && e.naturalWidth > 0")
    shots.take(p, "search")


def test_detect_draws_the_apis_boxes_and_landmarks(page: Page, live: Client, shots: Shots) -> None:
    photo = MISC / "two_people.jpg"
    p = page.open("try.html#detect", APPID)
    p.set_input_files("#detect-photo", str(photo))
    p.wait_for_selector("svg.overlay rect.box", timeout=60_000)
    fields = "age,gender,expression,emotion,eye_status,quality,landmark,liveness"
    body = {"image": b64(photo), "image_type": "BASE64", "face_field": fields, "max_face_num": 10}
    faces = live.ok("face/detect", body, APPID)["face_list"]
    assert len(faces) == 2
    drawn = p.locator("svg.overlay g.face")
    assert drawn.count() == len(faces)
    img = p.locator("figure.detected img").evaluate(
        "e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width / e.naturalWidth]; }"
    )
    for i, face in enumerate(faces):
        group = drawn.nth(i)
        rect = group.locator("rect.box")
        box = [float(rect.get_attribute(a) or "nan") for a in ("x", "y", "width", "height")]
        loc = face["location"]
        assert box == pytest.approx([loc["left"], loc["top"], loc["width"], loc["height"]])
        on_screen = rect.bounding_box()  # where the eye sees it: the image's pixels, scaled
        x0, y0, scale = img
        assert on_screen["x"] == pytest.approx(x0 + loc["left"] * scale, abs=2)
        assert on_screen["y"] == pytest.approx(y0 + loc["top"] * scale, abs=2)
        assert on_screen["width"] == pytest.approx(loc["width"] * scale, abs=3)
        for cls, key in (("lm72", "landmark72"), ("lm4", "landmark")):
            centres = group.locator(f"circle.{cls}").evaluate_all(
                "els => els.flatMap(e => [+e.getAttribute('cx'), +e.getAttribute('cy')])"
            )
            assert centres == pytest.approx([v for q in face[key] for v in (q["x"], q["y"])])
        facts = p.locator(f'article.face-facts[data-face="{i}"]').inner_text()
        for word in ("pose", "age", "gender", "expression", "emotion", "eyes open", "quality"):
            assert word in facts, (word, facts)
        shown = re.search(r"liveness\s+([0-9.]+)", facts)
        assert shown, facts
        assert float(shown.group(1)) == pytest.approx(face["liveness"]["livemapscore"], abs=6e-4)
    shots.take(p, "detect")
    p.uncheck("#show-landmark72")
    assert not p.locator("circle.lm72").first.is_visible()


def test_match_scores_against_the_thresholds(page: Page, live: Client, shots: Shots) -> None:
    a, b = photos("Tony_Blair")[2:4]
    p = page.open("try.html#match", APPID)
    p.set_input_files("#match-photo-1", str(a))
    p.set_input_files("#match-photo-2", str(b))
    p.wait_for_selector("#match-score", timeout=60_000)
    images = [{"image": b64(x), "image_type": "BASE64"} for x in (a, b)]
    score = live.ok("face/match", images, APPID)["score"]
    assert float(p.inner_text("#match-score")) == pytest.approx(score, abs=0.005)
    assert score >= 80
    assert "false accept rate of 1e-4" in p.inner_text("#match-verdict")
    assert p.locator("svg.gauge .tick").count() == 3  # FAR 1e-2, 1e-3, 1e-4
    shots.take(p, "match")


def test_keys_are_created_shown_once_and_revoked(page: Page, live: Client, shots: Shots) -> None:
    p = page.open("ops.html")
    p.wait_for_selector("#key-form")
    assert p.inner_text("#health-status") == "ok"
    assert "RocksDB at " in p.inner_text("#health")  # /health's store
    assert "liveness, quality" in p.inner_text("#capabilities")  # the models' face_field
    roles = p.locator("#models td:first-child").all_inner_texts()
    assert "recognizer" in roles and "liveness_v2" in roles
    p.fill("#key-appid", "console_ops")
    p.fill("#key-name", "gate 3")
    p.click("#key-form button")
    secret = p.inner_text("#new-secret-key", timeout=30_000)
    api_key = p.inner_text("#new-api-key")
    key = {"api_key": api_key, "secret_key": secret}
    token = get_token(live.url, key)  # the secret shown works
    row = p.locator(f'tr[data-key="{api_key}"]')
    assert "gate 3" in row.inner_text() and "console_ops" in row.inner_text()
    samples = "+(document.querySelector('#charts').dataset.samples || 0)"
    for n in (4, 12, 8):  # some traffic for the charts, over three of their samples
        for _ in range(n):
            live.ok("group/list", {}, "console_ops")
        seen = p.evaluate(f"() => {samples}")
        p.wait_for_function(f"() => {samples} > {seen}", timeout=30_000)
    assert p.locator("#chart-latency polyline, #chart-latency circle").count() >= 1
    p.evaluate("() => window.scrollTo(0, 0)")
    shots.take(p, "ops")
    p.locator("#keys").evaluate("e => e.scrollIntoView()")
    shots.take(p, "ops-keys")
    p.reload()
    p.wait_for_selector(f'tr[data-key="{api_key}"]')
    assert secret not in p.content()  # shown once: never listed again
    p.locator(f'tr[data-key="{api_key}"] button').click()
    p.click("dialog.confirm button[value=ok]")
    p.wait_for_selector(f'tr.revoked[data-key="{api_key}"]')
    r = httpx.post(f"{live.url}/face-api/v3/group/list", params={"access_token": token}, json={})
    assert code(r.json()) == 110  # its token died with it


def test_auth_required_refuses_a_wrong_secret_and_signs_in_to_its_appid(
    browser: Any, required: Client, tenants: dict[str, dict[str, Any]], shots: Shots
) -> None:
    a, b = tenants["ten_a"], tenants["ten_b"]
    page = Page(browser, required)
    page.allowed.append("the server responded with a status of 401")  # the wrong secret's
    p = page.open("")
    p.wait_for_selector("#sign-in-form")
    p.fill("#api-key", a["api_key"])
    p.fill("#secret-key", b["secret_key"])  # a real secret, of another key
    p.click("#sign-in-form button[type=submit]")
    p.wait_for_selector("#sign-in-status .msg.error")
    assert "Client authentication failed" in p.inner_text("#sign-in-status")
    assert p.input_value("#secret-key") == ""  # not left in the form
    shots.take(p, "signin")
    p.fill("#secret-key", a["secret_key"])
    p.click("#sign-in-form button[type=submit]")
    p.wait_for_selector("#appid")
    assert p.inner_text("#appid") == "ten_a"
    p.wait_for_selector('button.group-item[data-group="ten_a_group"]')
    assert p.locator("button.group-item").count() == 1  # its appid's groups only
    storage = p.evaluate("JSON.stringify([sessionStorage, localStorage])")
    assert a["secret_key"] not in storage and "fc1." in storage
    assert p.evaluate("document.cookie") == ""
    sent = [(url, data) for url, data in page.requests if a["secret_key"] in url + data]
    assert [url.split("?")[0] for url, _ in sent] == [f"{required.url}/oauth/2.0/token"]
    assert all(a["secret_key"] not in url for url, _ in sent)  # in the body, not the URL
    p.goto(f"{required.url}/console/ops.html")
    p.wait_for_selector("table.keys")
    assert set(p.locator("table.keys td:nth-child(3)").all_inner_texts()) == {"ten_a"}
    p.click("#sign-out")
    p.wait_for_selector("#sign-in-form")
    assert p.evaluate("sessionStorage.length") == 0
    page.close()


def test_a_revoked_token_signs_the_tab_out(
    browser: Any, required: Client, tenants: dict[str, dict[str, Any]]
) -> None:
    """The operations page polls the metrics; once its key is revoked elsewhere, the next answer
    (110) signs the tab out, and the sign-in form then stays put (the polling has stopped)."""
    key = create_key(required.data, "ten_a", "revoked while signed in")
    page = Page(browser, required)
    p = page.open("ops.html")
    p.fill("#api-key", key["api_key"])
    p.fill("#secret-key", key["secret_key"])
    p.click("#sign-in-form button[type=submit]")
    p.wait_for_selector("#chart-latency")
    as_a = {"access_token": tenants["ten_a"]["token"]}
    assert code(keys_call(required, "keys/revoke", {"api_key": key["api_key"]}, as_a)) == 0
    p.wait_for_selector("#sign-in-form", timeout=10_000)
    p.fill("#api-key", "typed after the sign-out")
    p.wait_for_timeout(4500)  # two polls' time: a poll still running would draw the form again
    assert p.input_value("#api-key") == "typed after the sign-out"
    assert p.evaluate("sessionStorage.length") == 0
    page.close()
