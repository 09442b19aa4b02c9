"""A face server started with --license, against authd processes on loopback: the seat it leases at
start and the refusals when it cannot (a seat too many, no authd, another secret, another vendor's
key), /health and /capabilities, authd SIGKILLed past the grace period (model routes refuse, the
library stays readable) and restarted (the lease comes back), authd serving a licence the server
cannot use (refused at once), a detection-only licence on every route, and the flags' checks.
Every refusal says why, and no library data is touched. docs/license.md."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from facecore.errors import LicenseRefused, LicenseUnreachable, NotLicensed
from facecore_license import protocol as P
from facecore_license.client import AuthdClient
from facecore_server.routes import OPS, RECOGNITION
from live_server import Authd, Client, Vendor, b64, free_port, lfw, start_authd, start_server

# Leases of 4 s (renewed every 1.3 s) and a grace of 2 s: authd away is noticed within 6 s, and
# only a stall of the server's heartbeat thread that long would make it lapse unasked.
LEASE, GRACE = ("--lease-seconds", "4"), 2
LICENCE_CODES = {NotLicensed.code, LicenseUnreachable.code, LicenseRefused.code}
FACE = {"image": b64(lfw("Aaron_Sorkin")), "image_type": "BASE64"}


@dataclass
class Lab:
    vendor: Vendor
    recognition: Path  # 2 seats
    detection: Path  # 2 seats, detection only
    authd: Authd  # leases of LEASE
    server: Client  # grace GRACE; holds one face: group "g1", user "u1"

    def serve(self, licence: Path) -> None:
        """authd killed (SIGKILL) and started again on its port with `licence`."""
        self.authd.kill()
        self.authd = start_authd(self.vendor, licence, *LEASE, port=self.authd.port)

    def licence_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.server.health()["license"]
        return state

    def until(self, what: str, **expected: Any) -> dict[str, Any]:
        """Polls /health until the licence state has `expected` (no timing asserted: a generous
        deadline only turns a hang into a failure)."""
        deadline = time.monotonic() + 60
        while True:
            state = self.licence_state()
            if all(state[k] == v for k, v in expected.items()):
                return state
            assert time.monotonic() < deadline, f"never {what}: {state}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    vendor = Vendor(tmp_path_factory.mktemp("vendor"))
    recognition = vendor.issue("recognition.json")
    detection = vendor.issue("detection.json", feature="detect")
    authd = start_authd(vendor, recognition, *LEASE)
    server = start_server(
        tmp_path_factory.mktemp("licensed"), *vendor.server_flags(authd, grace=GRACE)
    )
    lab = Lab(vendor, recognition, detection, authd, server)
    try:
        assert server.ok("face/add", {**FACE, "group_id": "g1", "user_id": "u1"})["face_token"]
        yield lab
    finally:
        server.stop()
        lab.authd.stop()


def refused_start(tmp_path: Path, *flags: str) -> str:
    """A server that must not start: its log, once it has exited 2."""
    with pytest.raises(RuntimeError, match="did not start") as e:
        start_server(tmp_path, *flags)
    assert not (tmp_path / "data").exists()  # refused before the library was opened
    assert "Traceback" not in str(e.value)
    return str(e.value)


def test_health_and_capabilities_show_the_licence(lab: Lab) -> None:
    state = lab.until("leased", state="leased")
    assert state["licensee"] == "Test Integrator" and state["seats"] == 2
    assert state["features"] == ["detect", "recognition"] and state["expiry"] is None
    assert state["worker_seats"] == ["cpu"] and state["grace_left_s"] == GRACE
    assert state["holder"].endswith(f"/{lab.server.proc.pid}")
    caps = httpx.get(lab.server.url + "/face-api/v3/capabilities").json()["result"]["license"]
    assert caps["codes"] == {
        "not_licensed": NotLicensed.code,
        "unreachable": LicenseUnreachable.code,
        "refused": LicenseRefused.code,
    }
    assert "face/match" in caps["routes"][RECOGNITION] and "face/list" in caps["routes"]["none"]


def test_a_seat_too_many_is_refused_at_start(lab: Lab, tmp_path: Path) -> None:
    lab.until("leased", state="leased")
    other = AuthdClient(lab.authd.url, P.read_secret(lab.vendor.secret))
    lease = other.acquire("other-box/1", "gpu0")["lease"]  # the second of the 2 seats
    try:
        log = refused_start(tmp_path, *lab.vendor.server_flags(lab.authd))
    finally:
        other.release(lease)
    assert "has 2 seat(s), all leased (to other-box/1 gpu0, " in log
    assert f"/{lab.server.proc.pid} cpu)" in log  # the holders, by name


@pytest.mark.parametrize("case", ["no authd", "another secret", "another vendor's key"])
def test_start_is_refused_without_a_trusted_lease(lab: Lab, tmp_path: Path, case: str) -> None:
    flags = list(lab.vendor.server_flags(lab.authd))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "server").mkdir()
    elsewhere = Vendor(tmp_path / "elsewhere")
    if case == "no authd":
        flags[flags.index("--license") + 1] = f"http://127.0.0.1:{free_port()}"
        why = "did not answer"
    elif case == "another secret":
        flags[flags.index("--license-secret-file") + 1] = str(elsewhere.secret)
        why = "not signed with this side's shared secret"
    else:
        flags[flags.index("--license-pubkey") + 1] = str(elsewhere.public)
        why = "signed by another key"
    log = refused_start(tmp_path / "server", *flags)
    assert "no licence lease from the authorisation service" in log and why in log
    lab.until("leased", state="leased", seats_in_use=1)  # the refused server's lease went back


def test_authd_killed_past_the_grace_period_and_restarted(lab: Lab) -> None:
    lab.serve(lab.recognition)
    lab.until("leased", state="leased", features=["detect", "recognition"])
    before = lab.server.ok("face/list", {"group_id": "g1", "user_id": "u1"})
    lab.authd.kill()
    state = lab.until("lapsed", state="lapsed")
    assert "did not answer" in state["reason"] and state["grace_left_s"] == 0
    for route in [op.path for op in OPS if op.model]:
        answer = lab.server.post(route, {})
        assert answer["error_code"] == LicenseUnreachable.code, (route, answer)
        assert f"grace {GRACE} s over" in answer["error_detail"]
    assert lab.server.ok("face/list", {"group_id": "g1", "user_id": "u1"}) == before
    assert lab.server.ok("group/list", {})["group_id_list"] == ["g1"]
    lab.authd = start_authd(lab.vendor, lab.recognition, *LEASE, port=lab.authd.port)
    lab.until("leased again", state="leased", reason=None)
    assert lab.server.ok("face/detect", FACE)["face_num"] == 1


def test_a_licence_the_server_cannot_use_stops_the_models_at_once(lab: Lab) -> None:
    """authd restarted with a licence that does not cover this server's models: no grace, model
    routes answer LicenseRefused, the library stays readable; a covering licence brings them back."""
    narrow = lab.vendor.issue("mtcnn-only.json", models=["mtcnn"])
    lab.serve(narrow)
    state = lab.until("refused", state="lapsed")
    assert "does not cover the model families" in state["reason"]
    answer = lab.server.post("face/detect", FACE)
    assert answer["error_code"] == LicenseRefused.code, answer
    assert "does not cover the model families" in answer["error_detail"]
    assert lab.server.ok("group/list", {})["group_id_list"] == ["g1"]
    lab.serve(lab.recognition)
    lab.until("leased again", state="leased", reason=None)


def test_a_detection_only_licence_on_every_route(lab: Lab) -> None:
    lab.serve(lab.detection)
    lab.until("on the detection licence", state="leased", features=["detect"])
    before = lab.server.ok("face/list", {"group_id": "g1", "user_id": "u1"})
    for op in OPS:
        answer = lab.server.post(op.path, FACE if op.path == "face/detect" else {})
        if op.feature == RECOGNITION:
            assert answer["error_code"] == NotLicensed.code, (op.path, answer)
            assert f"{op.path} needs a recognition licence" in answer["error_detail"]
            assert "sells detect" in answer["error_detail"]
        else:
            assert answer["error_code"] not in LICENCE_CODES, (op.path, answer)
    assert lab.server.ok("face/detect", FACE)["face_num"] == 1
    video = httpx.post(lab.server.url + "/face-api/face/liveness", json={}, timeout=30).json()
    assert video["err_no"] not in LICENCE_CODES
    assert lab.server.ok("face/list", {"group_id": "g1", "user_id": "u1"}) == before
    assert lab.server.ok("user/get", {"group_id": "g1", "user_id": "u1"})["user_list"]


def test_a_clean_stop_gives_the_seat_back(lab: Lab, tmp_path: Path) -> None:
    status = AuthdClient(lab.authd.url, P.read_secret(lab.vendor.secret)).status
    in_use = status()["in_use"]
    second = start_server(tmp_path, *lab.vendor.server_flags(lab.authd))
    assert second.health()["license"]["seats_in_use"] == in_use + 1
    assert second.stop() == 0
    assert status()["in_use"] == in_use


def test_the_license_flags_are_checked(tmp_path: Path) -> None:
    from facecore_server.settings import Settings

    key = tmp_path / "vendor.pub"
    key.write_text("-")
    assert Settings(license_pubkey=key).problems() == ["--license-pubkey without --license"]
    problems = Settings(license="https://authd", license_pubkey=key, license_grace=-1).problems()
    assert problems == [
        "--license: an authd URL is http://host[:port], got 'https://authd'",
        "--license needs --license-secret-file, a readable file (got None)",
        "--license-grace must be >= 0",
    ]


def test_a_seat_per_gpu_of_the_backend_else_one_for_the_cpu_worker() -> None:
    from facecore_server.licensing import seats

    assert seats(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert seats(["cpu"]) == ["cpu"] and seats([]) == ["cpu"]
