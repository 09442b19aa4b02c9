"""authd as a process on loopback, driven by the protocol's client and by the face service's
LeaseKeeper: seats, mutual authentication, replays, clock skew, a SIGKILL and a restart, the grace
period on an injected clock, and the licences it refuses to serve."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from facecore_license import authd as A
from facecore_license import document
from facecore_license import protocol as P
from facecore_license.client import AuthdClient, Refused, UnknownLease, Unreachable
from facecore_license.keeper import REFUSED, UNREACHABLE, LeaseKeeper
from live_server import MANIFEST, Authd, Vendor, authd_command, free_port, start_authd

FAMILIES = document.model_families(json.loads(MANIFEST.read_text()))


@pytest.fixture(scope="module")
def authd(vendor: Vendor) -> Iterator[Authd]:
    """authd over a 2-seat recognition licence for this machine."""
    with start_authd(vendor, vendor.issue("two-seats.json")) as server:
        yield server


def client(vendor: Vendor, authd: Authd, **kw: Any) -> AuthdClient:
    return AuthdClient(authd.url, P.read_secret(vendor.secret), **kw)


class Clock:
    """An injected monotonic clock: time moves only when a test moves it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_seats_are_leased_up_to_the_licences_count(vendor: Vendor, authd: Authd) -> None:
    c = client(vendor, authd)
    first = c.acquire("gpu-box-1/100", "gpu0")
    second = c.acquire("gpu-box-1/100", "gpu1")
    assert (first["seats"], second["in_use"], first["ttl"]) == (2, 2, P.LEASE_SECONDS)
    with pytest.raises(Refused) as refused:
        c.acquire("gpu-box-2/200", "gpu0")
    assert refused.value.error == "seats_full"
    assert "has 2 seat(s), all leased (to gpu-box-1/100 gpu0, gpu-box-1/100 gpu1)" in str(
        refused.value
    )
    again = c.acquire("gpu-box-1/100", "gpu0")  # an answer it lost: the same seat, not a third
    assert again["in_use"] == 2 and again["lease"] != first["lease"]
    with pytest.raises(UnknownLease):
        c.renew(first["lease"])  # replaced by the one acquired again
    assert c.renew(second["lease"])["in_use"] == 2
    for lease in (again["lease"], second["lease"]):
        assert c.release(lease)["released"] is True
    assert c.status()["in_use"] == 0


def test_a_wrong_secret_is_refused_both_ways(vendor: Vendor, authd: Authd) -> None:
    """A caller without authd's secret is refused, and cannot trust the refusal either."""
    intruder = AuthdClient(authd.url, b"0" * 64)
    with pytest.raises(Unreachable, match="not signed with this side's shared secret"):
        intruder.acquire("intruder/1", "cpu")
    assert client(vendor, authd).status()["in_use"] == 0
    assert "the caller's shared secret is not this authd's" in authd.log.read_text()


def test_an_impostor_authd_is_not_believed(vendor: Vendor) -> None:
    """Something on authd's port that answers a lease without the secret: no lease."""

    class Impostor(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            out = json.dumps({"lease": "x", "ttl": 1e9, "nonce": body["nonce"]}).encode()
            self.send_response(200)
            self.send_header(P.HEADER, P.answer_mac(b"guessed" * 8, self.path, 200, out))
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    impostor = HTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{impostor.server_address[1]}"
        with pytest.raises(Unreachable, match="not signed with this side's shared secret"):
            AuthdClient(url, P.read_secret(vendor.secret)).acquire("svc/1", "cpu")
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_a_replayed_request_is_refused(vendor: Vendor, authd: Authd) -> None:
    secret = P.read_secret(vendor.secret)
    body = json.dumps({"nonce": P.new_nonce(), "time": time.time()}).encode()
    headers = {P.HEADER: P.request_mac(secret, P.STATUS, body)}
    answers = []
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", authd.port, timeout=10)
        conn.request("POST", P.STATUS, body=body, headers=headers)
        reply = conn.getresponse()
        answers.append((reply.status, json.loads(reply.read())))
        conn.close()
    assert answers[0][0] == 200
    assert answers[1][0] == 401 and answers[1][1]["error"] == "replayed"


@pytest.mark.parametrize("skew", [-200.0, 200.0])
def test_clock_skew_within_the_tolerance_is_accepted(
    vendor: Vendor, authd: Authd, skew: float
) -> None:
    skewed = client(vendor, authd, wall=lambda: time.time() + skew)
    assert skewed.status()["seats"] == 2


@pytest.mark.parametrize("skew", [-400.0, 3600.0])
def test_clock_skew_beyond_the_tolerance_is_refused(
    vendor: Vendor, authd: Authd, skew: float
) -> None:
    skewed = client(vendor, authd, wall=lambda: time.time() + skew)
    with pytest.raises(Refused, match="beyond the 300 s tolerance") as refused:
        skewed.acquire("skewed/1", "cpu")
    assert refused.value.error == "clock_skew"
    assert refused.value.answer["skew"] == pytest.approx(skew, abs=30)
    assert client(vendor, authd).status()["in_use"] == 0


def test_killed_and_restarted_authd_with_the_grace_period(vendor: Vendor) -> None:
    """The service's side on an injected clock: authd SIGKILLed, the service serves through the
    grace period and not past it, then authd restarts and the lease comes back at the next tick."""
    licence = vendor.issue("restart.json", seats=1)
    server = start_authd(vendor, licence)
    clock = Clock()
    public = document.load_public(vendor.public)
    keeper = LeaseKeeper(client(vendor, server), "svc/1", ["cpu"], public, 100, FAMILIES, clock)
    restarted = None
    try:
        keeper.start()
        assert keeper.allowed() and keeper.snapshot()["state"] == "leased"
        server.kill()
        clock.t += 50
        keeper.tick()  # unanswered, within the lease
        assert keeper.allowed() and keeper.failure == UNREACHABLE
        clock.t += 50
        keeper.tick()  # past the lease (60 s), within the grace (100 s more)
        snap = keeper.snapshot()
        assert keeper.allowed() and snap["state"] == "grace" and snap["grace_left_s"] == 60
        assert "did not answer" in snap["reason"]
        clock.t += 61
        keeper.tick()
        assert not keeper.allowed() and keeper.snapshot()["state"] == "lapsed"
        restarted = start_authd(vendor, licence, port=server.port)
        keeper.tick()  # the old lease is unknown to the new authd: acquired again
        assert keeper.allowed() and keeper.failure is None
        assert keeper.snapshot()["state"] == "leased"
        assert [x["holder"] for x in client(vendor, restarted).status()["leases"]] == ["svc/1"]
        keeper.close()
        assert client(vendor, restarted).status()["in_use"] == 0  # given back on close
    finally:
        keeper.close()
        for s in (server, restarted):
            if s is not None:
                s.stop()


def test_the_state_answers_while_a_renewal_waits_on_authd(vendor: Vendor, authd: Authd) -> None:
    """A renewal that authd does not answer yet (a dropped network waits the client's timeout) does
    not hold up snapshot(), which /health and /capabilities read on the event loop."""
    entered, answer = threading.Event(), threading.Event()

    class Waiting(AuthdClient):
        def renew(self, lease: str) -> dict[str, Any]:
            entered.set()
            assert answer.wait(60)
            return super().renew(lease)

    c = Waiting(authd.url, P.read_secret(vendor.secret))
    public = document.load_public(vendor.public)
    keeper = LeaseKeeper(c, "svc/wait", ["cpu"], public, 100, FAMILIES, Clock())
    keeper.start()
    beat = threading.Thread(target=keeper.tick)
    try:
        beat.start()
        assert entered.wait(30)
        states: list[str] = []
        reader = threading.Thread(target=lambda: states.append(keeper.snapshot()["state"]))
        reader.start()
        reader.join(30)  # the renewal waits for `answer`, which only comes after this
        assert states == ["leased"]
        assert keeper.allowed()
    finally:
        answer.set()
        beat.join(30)
        keeper.close()
    assert not beat.is_alive() and keeper.failure is None
    assert client(vendor, authd).status()["in_use"] == 0


def test_a_licence_that_ends_while_leased_stops_the_models_at_once(vendor: Vendor) -> None:
    """authd in a thread with an injected wall clock: once the licence expires, renewals are
    refused and the service's deadline is now, without a grace period."""
    expiry = datetime.now(timezone.utc) + timedelta(days=30)
    lic, doc = document.read(
        vendor.issue("month.json", expiry=expiry), document.load_public(vendor.public)
    )
    wall = [time.time()]
    book = A.LeaseBook(lic, doc, wall=lambda: wall[0])
    service = A.Authd(book, P.read_secret(vendor.secret))
    http_server = A.http_server(service, "127.0.0.1", 0)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http_server.server_address[1]}"
    clock = Clock()
    c = AuthdClient(url, P.read_secret(vendor.secret), wall=lambda: wall[0])
    keeper = LeaseKeeper(
        c, "svc/2", ["cpu"], document.load_public(vendor.public), 1800, FAMILIES, clock
    )
    try:
        keeper.start()
        assert keeper.allowed()
        wall[0] = expiry.timestamp() + 1
        clock.t += 20
        keeper.tick()
        assert not keeper.allowed() and keeper.failure == REFUSED
        assert "expired on" in keeper.snapshot()["reason"]
        assert keeper.snapshot()["state"] == "lapsed"
    finally:
        keeper.close()
        http_server.shutdown()
        http_server.server_close()


def test_a_licence_not_covering_the_models_gets_no_lease(vendor: Vendor) -> None:
    """Refused at start; and a restarted authd serving such a licence stops the models at once,
    its lease given back rather than renewed."""
    public = document.load_public(vendor.public)
    narrow = vendor.issue("mtcnn-only.json", models=["mtcnn"])
    with start_authd(vendor, narrow) as server:
        c = client(vendor, server)
        with pytest.raises(document.LicenseError, match="does not cover the model families"):
            LeaseKeeper(c, "svc/3", ["cpu"], public, 1800, FAMILIES).start()
        assert c.status()["in_use"] == 0  # the lease went back
    clock = Clock()
    with start_authd(vendor, vendor.issue("wide.json")) as first:
        keeper = LeaseKeeper(client(vendor, first), "svc/4", ["cpu"], public, 1800, FAMILIES, clock)
        keeper.start()
        first.kill()
        with start_authd(vendor, narrow, port=first.port) as second:
            for _ in range(2):
                clock.t += 20
                keeper.tick()
                assert not keeper.allowed() and keeper.failure == REFUSED
                assert "does not cover" in keeper.snapshot()["reason"]
                assert client(vendor, second).status()["in_use"] == 0
            keeper.close()


def serve_once(vendor: Vendor, licence: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = authd_command(licence, vendor, free_port(), *flags)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def tampered(vendor: Vendor) -> Path:
    path = vendor.issue("tampered.json", seats=2)
    doc = json.loads(path.read_text())
    doc["license"]["seats"] = 200
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("tampered", "altered after it was signed"),
        ("another vendor", "signed by another key"),
        ("expired", "expired on"),
        ("not yet valid", "valid from"),
        ("another machine", "a licence serves only on the machine it was issued for"),
        ("no secret", "cannot read the shared secret"),
    ],
)
def test_authd_refuses_to_serve(vendor: Vendor, tmp_path: Path, case: str, why: str) -> None:
    now = datetime.now(timezone.utc)
    flags: tuple[str, ...] = ()
    if case == "tampered":
        licence = tampered(vendor)
    elif case == "another vendor":
        licence = Vendor(tmp_path).issue("theirs.json")
    elif case == "expired":
        licence = vendor.issue(
            "expired.json", not_before=now - timedelta(days=60), expiry=now - timedelta(days=1)
        )
    elif case == "not yet valid":
        licence = vendor.issue("future.json", not_before=now + timedelta(days=1))
    elif case == "another machine":
        licence = vendor.issue("elsewhere.json", fingerprint="00" * 32)
    else:
        licence = vendor.issue("fine.json")
        flags = ("--secret-file", str(tmp_path / "missing.secret"))
    out = serve_once(vendor, licence, *flags)
    assert out.returncode == 2, out.stderr
    assert why in out.stderr and "Traceback" not in out.stderr
    if case == "another machine":
        assert "this machine's fingerprint is" in out.stderr


def test_the_command_line_is_checked(vendor: Vendor) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facecore_license", "serve"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "required" in out.stderr
