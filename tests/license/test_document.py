"""Licence files: signed by the vendor's key, verified with its public key; an altered file, another
key's signature, malformed fields and a licence out of its terms are each refused, saying why."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from facecore_license import document
from facecore_license.document import LicenseError
from live_server import Vendor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def signed(vendor: Vendor, **terms: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "licensee": "ACME",
        "fingerprint": "ab" * 32,
        "seats": 4,
        "feature": "recognition",
        "models": ["mtcnn", "dlib_resnet"],
        "not_before": NOW,
        "expiry": None,
        "issued": NOW,
        **terms,
    }
    return document.issue(document.load_private(vendor.private), **fields)


def test_a_signed_licence_verifies_and_says_what_it_grants(vendor: Vendor) -> None:
    lic = document.verify(signed(vendor), document.load_public(vendor.public))
    assert (lic.licensee, lic.seats, lic.expiry) == ("ACME", 4, None)
    assert lic.features == ("detect", "recognition")
    assert lic.models == ("dlib_resnet", "mtcnn")
    assert lic.out_of_terms(NOW.timestamp() + 100 * 365 * 86400) is None  # perpetual
    assert lic.uncovered(["mtcnn", "cydral"]) == ["cydral"]
    detect = document.verify(signed(vendor, feature="detect"), document.load_public(vendor.public))
    assert detect.features == ("detect",)


def test_the_signature_does_not_depend_on_the_files_layout(vendor: Vendor, tmp_path: Path) -> None:
    doc = signed(vendor)
    reordered = {"signature": doc["signature"], **doc}
    reordered["license"] = dict(reversed(list(doc["license"].items())))
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(reordered, indent=4))
    lic, served = document.read(path, document.load_public(vendor.public))
    assert lic.seats == 4 and served == reordered


@pytest.mark.parametrize(
    ("field", "value"),
    [("seats", 40), ("features", ["detect"]), ("expiry", "2099-01-01T00:00:00Z")],
)
def test_an_altered_licence_is_refused(vendor: Vendor, field: str, value: Any) -> None:
    doc = signed(vendor)
    doc["license"][field] = value
    with pytest.raises(LicenseError, match="altered after it was signed"):
        document.verify(doc, document.load_public(vendor.public))


def test_another_keys_signature_is_refused(vendor: Vendor, tmp_path: Path) -> None:
    other = Vendor(tmp_path)
    doc = signed(other)
    mine = document.key_id(document.load_public(vendor.public))
    with pytest.raises(LicenseError, match=f"vendor key {mine}.*names key {doc['key_id']}"):
        document.verify(doc, document.load_public(vendor.public))


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({"format": "facecore-license/0"}, "not a FaceCore licence file"),
        ({"format": document.FORMAT, "license": {}}, "no signature"),
        ([1, 2], "not a FaceCore licence file"),
    ],
)
def test_a_file_that_is_not_a_licence_is_refused(vendor: Vendor, doc: Any, why: str) -> None:
    with pytest.raises(LicenseError, match=why):
        document.verify(doc, document.load_public(vendor.public))


@pytest.mark.parametrize(
    ("terms", "why"),
    [
        ({"seats": 0}, "seats must be an integer >= 1"),
        ({"feature": "search"}, "feature must be detect or recognition"),
        ({"models": []}, "covers no models"),
        ({"expiry": NOW - timedelta(days=1)}, "expires before it starts"),
    ],
)
def test_malformed_terms_are_not_signed(vendor: Vendor, terms: dict[str, Any], why: str) -> None:
    with pytest.raises(LicenseError, match=why):
        signed(vendor, **terms)


def test_terms_in_time(vendor: Vendor) -> None:
    lic = document.verify(
        signed(vendor, not_before=NOW, expiry=NOW + timedelta(days=365)),
        document.load_public(vendor.public),
    )
    assert lic.out_of_terms(NOW.timestamp()) is None
    assert "valid from 2026-06-01T12:00:00Z only" in str(lic.out_of_terms(NOW.timestamp() - 1))
    assert "expired on 2027-06-01T12:00:00Z" in str(lic.out_of_terms(NOW.timestamp() + 366 * 86400))


def test_keygen_does_not_overwrite_a_key(vendor: Vendor) -> None:
    with pytest.raises(LicenseError, match="does not overwrite"):
        document.keygen(vendor.private, vendor.home / "new.pub")
