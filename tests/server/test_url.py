"""image_type=URL: refused unless the host is allow-listed; then fetched without redirects, within
size limits. A local HTTP server on loopback stands in for the customer's image store."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from live_server import Client, lfw, start_server

IMAGE = lfw("Aaron_Sorkin").read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/face.jpg":
            body = IMAGE
        elif self.path == "/big.jpg":
            body = IMAGE + b"\0" * 300_000
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/secret")
            self.end_headers()
            return
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def url_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = start_server(
        tmp_path_factory.mktemp("url"), "--url-hosts", "127.0.0.1", "--max-body", "200000"
    )
    try:
        yield client
    finally:
        client.stop()


def _detect(client: Client, url: str) -> dict[str, object]:
    return client.post("face/detect", {"image": url, "image_type": "URL"})


def test_allow_listed_url_is_fetched(url_server: Client, images: str) -> None:
    env = _detect(url_server, images + "/face.jpg")
    assert env["error_code"] == 0 and env["result"]["face_num"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "code"),
    [("/missing.jpg", 222204), ("/redirect", 222204), ("/big.jpg", 222204)],
)
def test_failed_downloads(url_server: Client, images: str, path: str, code: int) -> None:
    env = _detect(url_server, images + path)
    assert env["error_code"] == code and env["error_msg"] == "image_url_download_fail"


def test_host_outside_the_allow_list(url_server: Client, images: str) -> None:
    env = _detect(url_server, images.replace("127.0.0.1", "localhost") + "/face.jpg")
    assert env["error_code"] == 222204 and "allow-list" in str(env["error_detail"])


def test_only_http_urls(url_server: Client) -> None:
    assert _detect(url_server, "file:///etc/passwd")["error_code"] == 222013


def test_url_is_off_by_default(server: Client, images: str) -> None:
    env = _detect(server, images + "/face.jpg")
    assert env["error_code"] == 222015 and "disabled" in str(env["error_detail"])
