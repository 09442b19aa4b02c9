"""The `facecore license` commands as a vendor and an integrator run them: keygen, fingerprint,
issue, verify (a good licence, an altered one, another machine's), secret, and status against
authd. Most run as `python -m facecore_license`, the same commands without the face pipeline."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from facecore_license.fingerprint import collect
from live_server import MANIFEST, Vendor, facecore_cli, start_authd


def license_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facecore_license", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_vendors_and_the_integrators_steps(tmp_path: Path) -> None:
    out = facecore_cli("license", "fingerprint", "--json")  # `facecore license` is wired
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["fingerprint"] == collect().digest and shown["parts"]

    key, pub = tmp_path / "vendor.key", tmp_path / "vendor.pub"
    assert license_cli("keygen", "--private", key, "--public", pub).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = license_cli("keygen", "--private", key, "--public", tmp_path / "x.pub")
    assert again.returncode == 1 and "does not overwrite" in again.stderr

    licence = tmp_path / "licence.json"
    issued = license_cli(
        "issue",
        "--key",
        key,
        "--licensee",
        "ACME",
        "--fingerprint",
        shown["fingerprint"],
        "--seats",
        "3",
        "--features",
        "detect",
        "--manifest",
        MANIFEST,
        "--out",
        licence,
    )
    assert issued.returncode == 0, issued.stderr
    terms = json.loads(issued.stdout)
    assert terms["seats"] == 3 and terms["features"] == ["detect"] and terms["expiry"] is None
    assert terms["models"] == sorted(
        {m["builder"] for m in json.loads(MANIFEST.read_text())["models"].values()}
    )

    good = license_cli("verify", licence, "--pubkey", pub, "--here")
    assert good.returncode == 0 and json.loads(good.stdout)["ok"] is True

    doc = json.loads(licence.read_text())
    doc["license"]["seats"] = 30
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(doc))
    bad = license_cli("verify", altered, "--pubkey", pub)
    assert bad.returncode == 1 and "altered after it was signed" in bad.stderr


def test_verify_here_names_another_machines_licence(vendor: Vendor) -> None:
    elsewhere = vendor.issue("elsewhere.json", fingerprint="00" * 32)
    out = license_cli("verify", elsewhere, "--pubkey", vendor.public, "--here")
    assert out.returncode == 1
    assert "this machine's fingerprint is" in json.loads(out.stdout)["problems"][0]
    assert license_cli("verify", elsewhere, "--pubkey", vendor.public).returncode == 0


def test_secret_and_status(vendor: Vendor, tmp_path: Path) -> None:
    secret = tmp_path / "authd.secret"
    assert license_cli("secret", secret).returncode == 0
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) == 64
    kept = secret.read_text()
    again = license_cli("secret", secret)
    assert again.returncode == 1 and "exists: secret does not overwrite" in again.stderr
    assert secret.read_text() == kept
    with start_authd(vendor, vendor.issue("status.json")) as authd:
        out = license_cli("status", authd.url, "--secret-file", vendor.secret)
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert (status["seats"], status["in_use"], status["leases"]) == (2, 0, [])
        wrong = license_cli("status", authd.url, "--secret-file", secret)
    assert wrong.returncode == 1 and "not signed with this side's shared secret" in wrong.stderr
