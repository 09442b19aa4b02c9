"""The licence file: what it grants, its Ed25519 signature, and the vendor's key files.

A licence file is JSON:

    {"format": "facecore-license/1",
     "license": {"id", "licensee", "fingerprint", "seats", "features", "not_before", "expiry",
                 "models", "issued"},
     "key_id": "<first 16 hex of sha256 of the vendor's public key>",
     "signature": "<base64 Ed25519 signature of the canonical JSON of `license`>"}

Canonical JSON: keys sorted, no spaces, ASCII. `expiry` null is a perpetual licence. `features` is
`["detect"]` or `["detect", "recognition"]` (recognition includes detection). `models` names the
model families covered (`model_families`: the `builder` of each model in the models' manifest): a
newer model of a covered family is covered, a new family is not. Times are UTC, ISO 8601 with a `Z`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "facecore-license/1"
DETECT, RECOGNITION = "detect", "recognition"
FEATURES = {DETECT: (DETECT,), RECOGNITION: (DETECT, RECOGNITION)}  # what each sale grants


class LicenseError(Exception):
    """A licence that cannot be used: unreadable, altered, not the vendor's, or out of its
    terms. The message says which, in words an operator can act on."""


def utc(text: str) -> datetime:
    """An ISO 8601 time, read as UTC when it names no zone."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class License:
    id: str
    licensee: str
    fingerprint: str  # fingerprint.collect().digest of the machine authd runs on
    seats: int  # leases held at once: GPUs, or CPU worker processes where there is no GPU
    features: tuple[str, ...]
    not_before: datetime
    expiry: datetime | None  # None: perpetual
    models: tuple[str, ...]
    issued: datetime

    def fields(self) -> dict[str, Any]:
        """The `license` object of the file, as signed."""
        return {
            "id": self.id,
            "licensee": self.licensee,
            "fingerprint": self.fingerprint,
            "seats": self.seats,
            "features": list(self.features),
            "not_before": iso(self.not_before),
            "expiry": None if self.expiry is None else iso(self.expiry),
            "models": list(self.models),
            "issued": iso(self.issued),
        }

    def out_of_terms(self, now: float) -> str | None:
        """Why the licence is not in force at `now` (Unix seconds), or None when it is."""
        if now < self.not_before.timestamp():
            return f"the licence {self.id} is valid from {iso(self.not_before)} only"
        if self.expiry is not None and now >= self.expiry.timestamp():
            return f"the licence {self.id} expired on {iso(self.expiry)}"
        return None

    def uncovered(self, families: Iterable[str]) -> list[str]:
        """The model families of `families` this licence does not cover."""
        return sorted(set(families) - set(self.models))


def from_fields(f: dict[str, Any]) -> License:
    """A License from its `license` object, checking every field's type and range."""
    try:
        seats, features, models = f["seats"], f["features"], f["models"]
        lic = License(
            id=str(f["id"]),
            licensee=str(f["licensee"]),
            fingerprint=str(f["fingerprint"]),
            seats=seats if isinstance(seats, int) and not isinstance(seats, bool) else -1,
            features=tuple(features) if isinstance(features, list) else (),
            not_before=utc(f["not_before"]),
            expiry=None if f["expiry"] is None else utc(f["expiry"]),
            models=tuple(str(m) for m in models) if isinstance(models, list) else (),
            issued=utc(f["issued"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LicenseError(f"the licence's fields are malformed ({type(e).__name__}: {e})") from e
    if lic.seats < 1:
        raise LicenseError(f"the licence's seats must be an integer >= 1, got {seats!r}")
    if lic.features not in FEATURES.values():
        raise LicenseError(
            f'the licence\'s features must be ["detect"] or ["detect", "recognition"], '
            f"got {features!r}"
        )
    if not lic.models:
        raise LicenseError("the licence covers no models")
    if lic.expiry is not None and lic.expiry <= lic.not_before:
        raise LicenseError("the licence expires before it starts")
    return lic


def model_families(manifest: dict[str, Any]) -> list[str]:
    """The model families of a models' manifest (models/onnx/manifest.json): each model's
    `builder`, or its role for a model installed without one (the user-supplied liveness pair)."""
    return sorted({str(e.get("builder") or role) for role, e in manifest["models"].items()})


# ---------------------------------------------------------------------------- keys and signatures


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(private_path: Path, public_path: Path) -> str:
    """A new vendor key pair: the private key (PKCS#8 PEM, mode 0600) and the public one (PEM).
    Refuses to overwrite either file. Returns the key id."""
    for path in (private_path, public_path):
        if path.exists():
            raise LicenseError(f"{path} exists: keygen does not overwrite a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_new(private_path, pem, "keygen does not overwrite a key", mode=0o600)
    public = private.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_new(public_path, public_pem, "keygen does not overwrite a key")
    return key_id(public)


def write_new(path: Path, data: bytes, refusal: str, mode: int = 0o644) -> None:
    """Create `path` holding `data`; LicenseError "{path} exists: {refusal}" if it exists. One
    exclusive create (O_EXCL), so no check-then-write race lets a second writer replace it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise LicenseError(f"{path} exists: {refusal}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise LicenseError(f"cannot read the private key {path}: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenseError(f"{path} is not an Ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise LicenseError(f"cannot read the public key {path}: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise LicenseError(f"{path} is not an Ed25519 public key")
    return key


def issue(
    private: Ed25519PrivateKey,
    *,
    licensee: str,
    fingerprint: str,
    seats: int,
    feature: str,
    models: Iterable[str],
    not_before: datetime,
    expiry: datetime | None,
    issued: datetime,
) -> dict[str, Any]:
    """A signed licence file (as JSON-ready data) for a sale of `feature` (detect or
    recognition); checked as `load` would check it."""
    if feature not in FEATURES:
        raise LicenseError(f"feature must be detect or recognition, got {feature!r}")
    lic = from_fields(
        {
            "id": secrets.token_hex(8),
            "licensee": licensee,
            "fingerprint": fingerprint,
            "seats": seats,
            "features": list(FEATURES[feature]),
            "not_before": iso(not_before),
            "expiry": None if expiry is None else iso(expiry),
            "models": sorted(set(models)),
            "issued": iso(issued),
        }
    )
    signed = lic.fields()
    return {
        "format": FORMAT,
        "license": signed,
        "key_id": key_id(private.public_key()),
        "signature": base64.b64encode(private.sign(canonical(signed))).decode(),
    }


def verify(doc: Any, public: Ed25519PublicKey) -> License:
    """The licence of a licence file's data once its signature verifies with the vendor's
    `public` key; LicenseError saying why otherwise. Terms (dates, fingerprint) are the caller's."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LicenseError(f"not a FaceCore licence file (format {FORMAT!r} expected)")
    fields, signature = doc.get("license"), doc.get("signature")
    if not isinstance(fields, dict) or not isinstance(signature, str):
        raise LicenseError("the licence file has no license object or no signature")
    try:
        public.verify(base64.b64decode(signature, validate=True), canonical(fields))
    except (InvalidSignature, binascii.Error, ValueError):
        theirs = doc.get("key_id")
        raise LicenseError(
            "the licence's signature does not verify with the vendor key "
            f"{key_id(public)}: the file was altered after it was signed, or it was signed by "
            f"another key (it names key {theirs})"
        ) from None
    return from_fields(fields)


def read(path: Path, public: Ed25519PublicKey) -> tuple[License, dict[str, Any]]:
    """A licence file from disk, verified: the licence and the file's data (served as is)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise LicenseError(f"cannot read the licence file {path}: {e}") from e
    return verify(doc, public), doc
