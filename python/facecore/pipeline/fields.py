"""The face fields: Baidu's `face_field` names, which field of the engine computes each, the keys it
adds to a face in an answer, and the names FaceCore knows but leaves out, with the reason.

One table for the engine (what `Engine.detect(fields=...)` accepts and computes), the server's
answers (which keys a field adds to a face) and `/capabilities` (what is served, what is not and
why). A field is named by the `Face` attribute it fills ("embedding"), a face_field value by
Baidu's name ("feature").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One thing the engine computes for a face on request."""

    names: tuple[str, ...]  # the face_field values that ask for it, as /capabilities lists them
    keys: tuple[str, ...]  # the keys it adds to a face in detect's answer
    aliases: tuple[str, ...] = ()  # face_field values that ask for it too, not listed


# By engine field name (Engine.detect's `fields`).
FIELDS = {
    "age": Field(("age",), ("age",)),
    "angle": Field(("angle",), ("angle",)),
    "emotion": Field(("emotion",), ("emotion",)),
    "expression": Field(("expression",), ("expression",)),
    "eye_status": Field(("eye_status",), ("eye_status",)),
    "gender": Field(("gender",), ("gender",)),
    "landmark": Field(("landmark", "landmark72"), ("landmark", "landmark72")),
    "quality": Field(("quality",), ("quality",)),
    "embedding": Field(("feature",), ("feature",)),
    # Only with the liveness models installed (facecore.convert.minifasnet); else left out.
    "liveness": Field(("liveness",), ("liveness",), aliases=("spoofing",)),
}
# face_field value -> engine field.
NAMES = {name: f for f, field in FIELDS.items() for name in (*field.names, *field.aliases)}
# What Engine.detect also takes (the Face attribute's words); not face_field values.
ENGINE_ALIASES = {"pose": "angle", "landmarks": "landmark"}

# Keys every face of detect's answer has, whatever face_field asks.
ALWAYS_KEYS = ("face_token", "location", "face_probability", "angle")
# Computed for every face found in a request's image: its face_token keeps them, so the token
# can stand for the image later (a search needs the embedding, quality_control the quality).
STORED = ("embedding", "quality")
# Computed for every face detect answers: what it stores, and the angle it always shows.
ALWAYS = ("angle", *STORED)

# Baidu's face_field values with no honest model here, and why. Asked for, they are left out of
# the answer, never invented.
LEFT_OUT = {
    "beauty": "no licence-clean attractiveness model exists, and a beauty score is not a measurement",
    "glasses": "no glasses classifier ships in a registry package under a commercial-use licence",
    "race": "no model; classifying race is also a liability we choose not to take",
    "face_shape": "no labelled data or model to check a face-shape rule against",
    "face_type": "no human/cartoon classifier in a registry package",
    "parsing": "no face-parsing (segmentation) model in a registry package",
    "landmark150": "no 150-point layout is defined for our 468-point mesh; landmark72 is served",
    "mask": "no mask classifier ships in a registry package under a usable licence",
}
LEFT_OUT_ALIASES = {"faceshape": "face_shape", "facetype": "face_type"}
# Parts of Baidu's quality that are not measured (quality_control does not check them), and why.
NOT_MEASURED = {
    "occlusion": "needs a model trained on occluded faces; none ships under a usable licence",
}
NO_LIVENESS = "no liveness model is installed"


def served(liveness: bool) -> list[str]:
    """The face_field values an engine answers (with or without the liveness models)."""
    return sorted(
        name for f, field in FIELDS.items() if liveness or f != "liveness" for name in field.names
    )


def unsupported(liveness: bool) -> dict[str, str]:
    """What an engine leaves out (face_field values and quality parts), with the reason."""
    missing = {} if liveness else dict.fromkeys(NAMES.keys() - served(False), NO_LIVENESS)
    return dict(sorted({**LEFT_OUT, **NOT_MEASURED, **missing}.items()))


def engine_field(name: str, liveness: bool) -> str | None:
    """The engine field a face_field value asks for; None for a value left out (by this engine:
    "liveness" without the models). KeyError for a name nobody knows."""
    field = NAMES.get(name)
    if field is not None and (liveness or field != "liveness"):
        return field
    if field is None and name not in LEFT_OUT and name not in LEFT_OUT_ALIASES:
        raise KeyError(name)
    return None


def known() -> list[str]:
    """Every face_field value, served or left out."""
    return sorted({*NAMES, *LEFT_OUT, *LEFT_OUT_ALIASES})
