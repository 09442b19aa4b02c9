"""quality_control and liveness_control: the spec's thresholds, and the checks a face must pass
before a route uses it (match, identify, multi-search, add, update)."""

from __future__ import annotations

from typing import Any

from facecore.errors import (
    FaceBlurred,
    FaceCoreError,
    IncompleteFace,
    LivenessFailed,
    LivenessMissing,
    PoorLight,
    QualityUnmeasured,
)
from facecore_server import params as P
from facecore_server.faces import Probe

# The spec's quality thresholds: illumination >= min, blur <= max, completeness >= min.
# Occlusion is never checked: no occlusion model (facecore.errors.UNSENT, /capabilities).
QUALITY_LIMITS = {"LOW": (20.0, 0.8, 0), "NORMAL": (40.0, 0.6, 0), "HIGH": (100.0, 0.2, 1)}
# The spec's liveness_control thresholds: a face scoring under them is LivenessFailed.
LIVENESS_LIMITS = {"LOW": 0.05, "NORMAL": 0.3, "HIGH": 0.9}
# What a face failing each quality check raises (/capabilities lists their codes).
QUALITY_ERRORS: dict[str, type[FaceCoreError]] = {
    "blur": FaceBlurred,
    "illumination": PoorLight,
    "completeness": IncompleteFace,
}


def liveness_control(body: dict[str, Any], installed: bool) -> str:
    """The request's liveness_control; LivenessMissing when it asks for liveness the server
    lacks."""
    control: str = P.LIVENESS_CONTROL.read(body)
    if control != "NONE" and not installed:
        raise LivenessMissing(
            f"liveness_control={control} needs the liveness models, which are not installed "
            "on this server (use NONE, or install them: README, Liveness)",
            "liveness_control",
        )
    return control


def check_quality(p: Probe, control: str) -> None:
    if control == "NONE":
        return
    min_light, max_blur, min_complete = QUALITY_LIMITS[control]
    q = p.attrs.get("quality")
    if q is None:  # cannot happen for faces FaceCore detected; a token always carries quality
        raise QualityUnmeasured("the face has no quality measurement to check")
    if q["blur"] > max_blur:
        raise FaceBlurred(f"face blur {q['blur']:.3f} is over {max_blur} ({control})")
    if q["illumination"] < min_light:
        raise PoorLight(
            f"face illumination {q['illumination']:.0f} is under {min_light:g} ({control})"
        )
    if q["completeness"] < min_complete:
        raise IncompleteFace(f"the face is not wholly inside the image ({control})")


def no_liveness(token: str) -> LivenessMissing:
    return LivenessMissing(
        f"face_token {token} was detected without liveness: send the image itself, or detect "
        "it with face_field=liveness first",
    )


def check_liveness(p: Probe, control: str) -> None:
    if control == "NONE":
        return
    live = p.attrs.get("liveness")
    if live is None:
        raise no_liveness(p.token)
    if live["livemapscore"] < LIVENESS_LIMITS[control]:
        raise LivenessFailed(
            f"liveness score {live['livemapscore']:.3f} is under {LIVENESS_LIMITS[control]} "
            f"({control})",
        )
