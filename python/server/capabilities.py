"""GET /face-api/v3/capabilities: what this server computes and refuses, and its limits, for a client
to read instead of guessing (face_field values, image types, controls, liveness, auth, batching)."""

from __future__ import annotations

from typing import Any

from facecore.errors import (
    LicenseRefused,
    LicenseUnreachable,
    LivenessFailed,
    LivenessMissing,
    NotLicensed,
)
from facecore.pipeline import fields
from facecore.pipeline.engine import Engine
from facecore.pipeline.liveness import THRESHOLDS as LIVENESS_THRESHOLDS
from facecore.runtime.gpu import describe as describe_backend
from facecore_server.controls import LIVENESS_LIMITS, QUALITY_ERRORS, QUALITY_LIMITS
from facecore_server.routes import LIVENESS_COUNTS, OPS
from facecore_server.settings import Settings


def document(settings: Settings, engine: Engine, url: bool, workers: int) -> dict[str, Any]:
    """The capabilities of a server with these settings and this engine; `url`: image_type URL
    is on (hosts are allow-listed); `workers`: threads running the models."""
    caps = engine.capabilities()
    s = settings
    live = caps["liveness"]
    return {
        "face_field": caps["face_field"],
        "always": caps["always"],
        "quality": caps["quality"],
        "emotion": caps["emotion"],
        "unsupported": caps["unsupported"],
        "image_type": ["BASE64", "FACE_TOKEN"] + (["URL"] if url else []),
        "quality_control": {
            "values": ["NONE", *QUALITY_LIMITS],
            "checks": {part: error.code for part, error in QUALITY_ERRORS.items()},
            "not_checked": dict(fields.NOT_MEASURED),
        },
        "liveness_control": {
            "values": ["NONE", *LIVENESS_LIMITS] if live else ["NONE"],
            "thresholds": LIVENESS_LIMITS if live else {},
            "installed": live,
            "missing": LivenessMissing.code,
            "failed": LivenessFailed.code,
        },
        "liveness": (
            {"thresholds": LIVENESS_THRESHOLDS, "images": list(LIVENESS_COUNTS)} if live else None
        ),
        "embedding_dim": caps["embedding_dim"],
        "score": "0-100, 80 = false accept rate 1e-4 (docs/accuracy.md)",
        "limits": {
            "max_body_bytes": s.max_body,
            "max_inflight_bytes": s.max_inflight_bytes,
            "body_timeout_s": s.body_timeout,
            "max_pixels": s.max_pixels,
            "max_face_num": 10,
            "min_face_px": s.min_face,
            "max_groups_per_search": 10,
            "max_user_num": 20,
            "token_days": s.token_days,
            "token_capacity": s.token_capacity,
        },
        "auth": {
            "mode": s.auth,
            "token_endpoint": "/oauth/2.0/token",
            "credentials": ["access_token (query)", "X-Api-Key + X-Secret-Key (headers)"],
            "access_token_seconds": s.access_token_seconds,
        },
        "batching": {
            "max_batch": s.batch_max,
            "max_wait_ms": s.batch_wait_ms,
            "workers": workers,
        },
        "backend": describe_backend(engine.backend),
    }


def license_section(state: dict[str, Any]) -> dict[str, Any]:
    """The licence part, for a server started with --license: its state (as /health shows it),
    which routes each feature covers, and the codes a refusal answers (docs/license.md)."""
    features: dict[str, list[str]] = {}
    for op in OPS:
        features.setdefault(op.feature or "none", []).append(op.path)
    return {
        **state,
        "routes": features,
        "lease_needed": [op.path for op in OPS if op.model] + ["face/liveness(video)"],
        "codes": {
            "not_licensed": NotLicensed.code,
            "unreachable": LicenseUnreachable.code,
            "refused": LicenseRefused.code,
        },
    }
