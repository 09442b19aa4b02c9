"""Bounded time and memory for bodies: admission before a body is read, the bytes of bodies held at
once, a deadline for a body to arrive, clients that hang up mid-body, ambiguous framing, and the
server's memory under a flood of large bodies (the bound stated in docs/api.md, Memory).

Raw sockets where the test needs to control what is sent and when: an HTTP client always sends the
whole body before it reads the answer.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import Client, b64, lfw, start_server
from PIL import Image

MIB = 1 << 20
DETECT = "/face-api/v3/face/detect?appid=limits"


def head(path: str, length: int | None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{framing}{extra}\r\n"
    ).encode()


def connect(client: Client) -> socket.socket:
    host, port = client.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def answer(s: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One HTTP response read off `s`: status, headers, JSON body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {buf!r}")
        buf += chunk
    top, _, rest = buf.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers["content-length"]):
        rest += s.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(rest)


def exchange(client: Client, path: str, body: bytes) -> tuple[dict[str, Any], float]:
    """POST `body`, writing it on another thread while the answer is read (a server that answers
    before reading, as admission does, may answer before the body is sent); the envelope and the
    seconds from the headers to the answer, as a client would see them (reported, not asserted)."""
    s = connect(client)
    try:
        t0 = time.monotonic()
        s.sendall(head(path, len(body)))

        def write() -> None:
            try:
                s.sendall(body)
            except OSError:  # the server answered and closed first: fine
                pass

        writer = threading.Thread(target=write)
        writer.start()
        status, _, env = answer(s)
        seconds = time.monotonic() - t0
        assert status == 200
        return env, seconds
    finally:
        s.close()
        writer.join()


def metric(client: Client, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(client.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if labels else name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Room for three 10 MiB bodies at once, one worker, bodies due within 2 s."""
    client = start_server(
        tmp_path_factory.mktemp("limits"),
        "--workers",
        "1",
        "--max-inflight-bytes",
        str(30 * MIB),
        "--body-timeout",
        "2",
    )
    try:
        yield client
    finally:
        client.stop()


def test_bodies_are_admitted_before_they_are_read(tight: Client) -> None:
    """Three requests hold their declared 9.5 MB each, having sent 1 KB: a fourth 9.5 MB request
    is refused 222901 from its headers alone (it sends no body at all), while small ones still
    pass; once the three hang up, their bytes are free again."""
    held = []
    for _ in range(3):
        s = connect(tight)
        s.sendall(head(DETECT, 9_500_000) + b'{"image": "' + b"A" * 1000)
        held.append(s)
    time.sleep(0.5)  # the server has their headers: they are admitted
    s = connect(tight)
    s.sendall(head(DETECT, 9_500_000))  # no body follows
    status, _, env = answer(s)
    s.close()
    assert status == 200 and env["error_code"] == 222901, env
    assert "bytes of request bodies are already held" in env["error_detail"]
    assert (
        httpx.post(tight.url + "/face-api/v3/group/list?appid=limits", json={}).json()["error_code"]
        == 0
    )
    for s in held:  # the clients hang up mid-body
        s.close()
    time.sleep(0.5)
    body = json.dumps({"image": b64(lfw("Aaron_Sorkin")), "image_type": "BASE64"}).encode()
    env, _ = exchange(tight, DETECT, body + b" " * 9_000_000)
    assert env["error_code"] == 0 and env["result"]["face_num"] == 1
    # A hang-up is the client's doing: logged without a traceback, never counted as 222302.
    log = tight.server_log()
    assert "the client closed the connection before its body arrived" in log
    assert "Traceback" not in log and " ERROR " not in log
    assert metric(tight, "facecore_requests_total", route="face/detect", error_code="222302") == 0
    assert metric(tight, "facecore_requests_total", route="face/detect", error_code="closed") == 3


def test_a_body_must_arrive_in_time(tight: Client) -> None:
    """A client that trickles its body cannot hold its admitted bytes past --body-timeout."""
    s = connect(tight)
    s.sendall(head(DETECT, 9_000_000) + b'{"image": "')
    status, _, env = answer(s)
    s.close()
    assert status == 200 and env["error_code"] == 222001, env
    assert "did not arrive within 2 s" in env["error_detail"]


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
    ],
)
def test_ambiguous_framing_is_refused_and_closed(tight: Client, framing: str) -> None:
    """Content-Length beside Transfer-Encoding: the smuggling shape. 400, the envelope, and the
    connection closed, so the bytes after it are never read as a request."""
    s = connect(tight)
    s.sendall(head("/face-api/v3/group/add?appid=limits", None, framing) + b"2\r\n{}\r\n0\r\n\r\n")
    s.sendall(head("/face-api/v3/group/add?appid=limits", 22) + b'{"group_id": "smuggl"}')
    status, headers, env = answer(s)
    assert status == 400 and headers["connection"] == "close"
    assert env["error_code"] == 222001 and "ambiguous body framing" in env["error_detail"]
    assert s.recv(65536) == b""  # closed: the second request was not served
    s.close()
    listed = httpx.post(tight.url + "/face-api/v3/group/list?appid=limits", json={}).json()
    assert "smuggl" not in listed["result"]["group_id_list"]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_memory_stays_bounded_under_a_flood_of_large_bodies(tmp_path: Path) -> None:
    """120 clients at once, each sending a 9 MB detect body (a 6-megapixel face image plus
    padding): the server answers each 0 or 222901, and its memory grows by
    at most the bound of docs/api.md (Memory): --max-inflight-bytes of bodies held, plus on each
    worker four copies of a body (raw, parsed, base64 text and bytes) and 14 bytes a pixel of
    --max-pixels (the decode's 12, then the image and the detector's pyramid), plus 64 MiB of
    allocator slack. Before admission came ahead of reading, every body was read and parsed first:
    1.3 GB of growth here, 2.3 GB in the probe's run."""
    inflight, workers, pixels = 48 * MIB, 2, 6_000_000
    server = start_server(
        tmp_path,
        "--workers",
        str(workers),
        "--max-inflight-bytes",
        str(inflight),
        "--max-pixels",
        str(pixels),
    )
    try:
        big = Image.open(lfw("Aaron_Sorkin")).resize((2440, 2440))  # 5.95 megapixels
        jpeg = io.BytesIO()
        big.save(jpeg, "JPEG", quality=90)
        image = base64.b64encode(jpeg.getvalue()).decode()
        face = json.dumps({"image": image, "image_type": "BASE64"})
        body = (face[:-1] + ', "padding": "' + "x" * (9_000_000 - len(face)) + '"}').encode()
        assert server.ok("face/detect", json.loads(body))["face_num"] == 1  # warm
        base = rss(server.proc.pid)
        peak, done = base, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.01):
                peak = max(peak, rss(server.proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = threading.Barrier(120)

        def one(_: int) -> tuple[dict[str, Any], float]:
            start.wait()
            return exchange(server, "/face-api/v3/face/detect?appid=flood", body)

        try:
            with ThreadPoolExecutor(120) as pool:
                answers = list(pool.map(one, range(120)))
        finally:
            done.set()
            sampler.join()
        codes = [env["error_code"] for env, _ in answers]
        assert set(codes) <= {0, 222901} and codes.count(0) >= 1 and codes.count(222901) >= 1
        bound = inflight + workers * (4 * 10 * MIB + 14 * pixels) + 64 * MIB
        assert peak - base <= bound, ((peak - base) / MIB, bound / MIB)
    finally:
        assert server.stop() == 0
