"""What the licence check adds to a request: one server without --license (the baseline) and one
with it, leased from an authd on loopback, in the same run.

The route is face/match of two FACE_TOKENs (photos 1 and 2 of one LFW person, detected once per
server beforehand): a model route that needs both checks (the recognition feature, a live lease)
and whose own work is small (two stored embeddings, one score), so that the check is as large a
part of the latency as it can be. One keep-alive connection, one request at a time; each timed
round is one request. Every answer is checked: error code 0 and the same score on both servers.

`test_license_step` times the check alone, in-process: the gate a licensed endpoint calls
(facecore_server.licensing, against a real authd lease) and, as the baseline, what an endpoint
without --license does in its place (`gate is not None` is false). Target: under 20 us a request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from facecore_server.licensing import Licensing
from facecore_server.routes import OPS
from facecore_server.settings import Settings

from tests.server.live_server import (
    MANIFEST,
    Authd,
    Client,
    Vendor,
    b64,
    lfw,
    start_authd,
    start_server,
)

ROUNDS = 3000
PERSON = "Aaron_Sorkin"


class Arm:
    def __init__(self, server: Client) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        tokens = [
            server.ok("face/detect", {"image": b64(lfw(PERSON, i)), "image_type": "BASE64"})[
                "face_list"
            ][0]["face_token"]
            for i in (1, 2)
        ]
        self.body = json.dumps([{"image": t, "image_type": "FACE_TOKEN"} for t in tokens])
        self.path = f"/face-api/v3/face/match?appid={server.appid}"

    def call(self) -> dict[str, Any]:
        self.conn.request(
            "POST", self.path, body=self.body, headers={"Content-Type": "application/json"}
        )
        answer: dict[str, Any] = json.loads(self.conn.getresponse().read())
        return answer


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Vendor:
    return Vendor(tmp_path_factory.mktemp("vendor"))


@pytest.fixture(scope="module")
def authd(vendor: Vendor) -> Iterator[Authd]:
    with start_authd(vendor, vendor.issue("bench.json")) as server:
        yield server


@pytest.fixture(scope="module")
def arms(
    tmp_path_factory: pytest.TempPathFactory, vendor: Vendor, authd: Authd
) -> Iterator[dict[str, Arm]]:
    out = {}
    with contextlib.ExitStack() as running:
        for arm, flags in (("off", ()), ("licensed", vendor.server_flags(authd))):
            home = tmp_path_factory.mktemp(f"license-{arm}")
            server = start_server(home, "--access-log", "off", *flags, threads=0)
            running.enter_context(server)
            out[arm] = Arm(server)
            running.callback(out[arm].conn.close)
        yield out


@pytest.mark.parametrize("arm", ["off", "licensed"])
def test_license_overhead(benchmark: Any, arms: dict[str, Arm], arm: str) -> None:
    a = arms[arm]
    reference = arms["off"].call()  # the baseline server's score of the same pair
    assert reference["error_code"] == 0, reference
    answers: list[dict[str, Any]] = []

    def call() -> None:
        answers.append(a.call())

    benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=50)
    assert all(x["error_code"] == 0 for x in answers), answers[0]
    assert {x["result"]["score"] for x in answers} == {reference["result"]["score"]}
    benchmark.extra_info.update(route="face/match (FACE_TOKEN)", arm=arm, answers=len(answers))


# ---------------------------------------------------------------------------- the step alone

PER_ROUND = 1000


@pytest.mark.parametrize("arm", ["off", "licensed"])
def test_license_step(
    benchmark: Any, vendor: Vendor, authd: Authd, tmp_path: Path, arm: str
) -> None:
    """The check of face/match, PER_ROUND times a round: `gate()` on a Licensing holding a real
    lease, or the `gate is not None` test of a server without --license."""
    licensing = None
    gate: Callable[[], None] | None = None
    if arm == "licensed":
        settings = Settings(
            data_dir=tmp_path,
            license=authd.url,
            license_pubkey=vendor.public,
            license_secret_file=vendor.secret,
        )
        families = json.loads(MANIFEST.read_text())
        from facecore_license.document import model_families

        licensing = Licensing(settings, model_families(families))
        match = next(op for op in OPS if op.path == "face/match")
        gate = licensing.gate(match.path, match.feature, match.model)
    passed = [0]

    def batch() -> None:
        for _ in range(PER_ROUND):
            if gate is not None:
                gate()
            passed[0] += 1

    try:
        benchmark.pedantic(batch, rounds=200, iterations=1, warmup_rounds=5)
    finally:
        if licensing is not None:
            licensing.close()
    assert passed[0] == 205 * PER_ROUND  # no request refused
    benchmark.extra_info.update(arm=arm, requests_per_round=PER_ROUND)
