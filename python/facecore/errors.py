"""FaceCore's errors: one class per error a caller can get, each carrying its wire code and text.

The v3 errors are the table at the end of Baidu's private-deployment v3 document, one class per code
FaceCore sends: `code` is the table's number, `message` its `error_msg` exactly (clients match on
it). The instance's own text (`str(e)`) says why in words; the server sends it as `error_detail`.
Code raises and catches these names; only this module spells the numbers, and the server turns any
of them into the envelope in one place (`facecore_server.responses`).

Codes of the table that FaceCore never sends are listed in `UNSENT` with the reason, so a reader
(and tests/facecore/test_errors.py) can check the table is covered whole. Argument errors of the
library API (wrong dtype, shape, NaN, ...) have no wire form (`code` None) and are also
`TypeError` / `ValueError` / `KeyError` subclasses, so ordinary Python handling works.
"""

from __future__ import annotations


class FaceCoreError(Exception):
    """Base class. `code` is the v3 error code, or None when the error has no wire form."""

    code: int | None = None
    message: str = "system error"

    def __init__(self, detail: str | None = None, param: str | None = None) -> None:
        super().__init__(detail or self.message)
        self.param = param  # the request parameter at fault, when one is

    def error_msg(self) -> str:
        """The envelope's `error_msg`: the table's text."""
        return self.message


# -- argument errors of the library's Python API (no wire form) -------------------------------------


class InvalidArgument(FaceCoreError, ValueError):
    """A value is out of range or malformed (names the argument)."""


class InvalidType(FaceCoreError, TypeError):
    """An array or value has the wrong type or dtype (names the argument)."""


class UnknownId(FaceCoreError, KeyError):
    """An id given for removal or lookup is not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ModelsMissing(FaceCoreError):
    """The models directory or one of its files is absent (run `make models`)."""


class BackupError(FaceCoreError):
    """A backup or restore that cannot be done as asked (the message says why)."""


class EngineError(FaceCoreError):
    """An engine (facecore.runtime.engines) cannot be built or loaded: the message names the model
    and why (no torch, a model file that does not match its manifest, a device the key was not
    built for, a trace that does not hold for every batch size)."""


# -- 2220xx: a parameter is missing or malformed --------------------------------------------------


class MissingParam(FaceCoreError, ValueError):
    """A required parameter is absent (or the body carrying it is unreadable)."""

    code = 222001
    message = "param[] is null"

    def error_msg(self) -> str:  # the brackets name the missing parameter, as the others do
        return f"param[{self.param}] is null" if self.param else self.message


class _Unnamed(MissingParam):
    """A 222001 for something the table has no code for: its error_msg names no parameter
    ("param[] is null" names only a parameter that is missing)."""

    def error_msg(self) -> str:
        return self.message


class BadMatchThreshold(_Unnamed):
    """match_threshold malformed or outside 0..100: the table has no code for it, so 222001."""


class BadBody(_Unnamed):
    """The body is not a JSON object (or array where one is taken), arrived incomplete or too
    slowly, or is a malformed form: the table has no code for it, so 222001."""


class BadKeyName(_Unnamed):
    """A key's name (the console's key management) that is not a string of at most 128
    printable characters: the table has no code for it, so 222001."""


class FormatError(FaceCoreError, ValueError):
    """A parameter is present but malformed; each subclass is one parameter's code."""


class BadStart(FormatError):
    code, message = 222002, "param[start] format error"


class BadLength(FormatError):
    code, message = 222003, "param[length] format error"


class BadGroupIdList(FormatError):
    code, message = 222005, "param[group_id_list] format error"


class BadGroupId(FormatError):
    code, message = 222006, "group_id format error"


class BadUserInfo(FormatError):
    code, message = 222010, "user_info format error"


class BadImage(FormatError):
    code, message = 222013, "param[image] format error"


class BadAppId(FormatError):
    code, message = 222014, "param[app_id] format error"


class BadImageType(FormatError):
    code, message = 222015, "param[image_type] format error"


class BadMaxFaceNum(FormatError):
    code, message = 222016, "param[max_face_num] format error"


class BadFaceField(FormatError):
    code, message = 222017, "param[face_field] format error"


class BadUserId(FormatError):
    code, message = 222018, "param[user_id] format error"


class BadQualityControl(FormatError):
    code, message = 222019, "param[quality_control] format error"


class BadLivenessControl(FormatError):
    code, message = 222020, "param[liveness_control] format error"


class BadMaxUserNum(FormatError):
    code, message = 222021, "param[max_user_num] format error"


class BadFaceType(FormatError):
    code, message = 222024, "param[face_type] format error"


class BadFaceToken(FormatError):
    code, message = 222025, "param[face_token] format error"


# -- 2222xx / 2223xx / 2229xx: images, faces and the service ------------------------------------------


class NoFace(FaceCoreError):
    code, message = 222202, "pic not has face"


class ImageUnreadable(FaceCoreError, ValueError):
    """The bytes are not an image (or video) we can decode: not one, truncated, too small."""

    code, message = 222203, "image check fail"


class DownloadFailed(FaceCoreError):
    """image_type URL: the URL is not allowed, did not answer, or answered too much."""

    code, message = 222204, "image_url_download_fail"


class NoMatch(FaceCoreError):
    """face/identify and multi-search: no user scores at or over match_threshold."""

    code, message = 222207, "match user is not found"


class WrongImageCount(FaceCoreError):
    """face/match and face/liveness: the body holds a number of images the route does not take."""

    code, message = 222208, "the number of image is incorrect"


class FaceTokenNotFound(FaceCoreError):
    """A face_token (or H5 session code) this server never issued, or one that has expired."""

    code, message = 222209, "face token not exist"


class NetworkUnavailable(FaceCoreError):
    """A service this server depends on does not answer: the table's "network not available" is
    the server's own request failing. Its subclasses name which service; retry once it is back."""

    code, message = 222201, "network not available"


class StoreUnavailable(NetworkUnavailable):
    """The shared store (PostgreSQL, --store) cannot be reached, or refuses this instance (a
    newer schema): nothing was written; retry. Reads answered from memory still work."""


class InternalError(FaceCoreError):
    """An unexpected failure inside FaceCore; the server logs the traceback under the log_id."""

    code, message = 222302, "system error"


class ImageTooLarge(FaceCoreError, ValueError):
    """An image or video over a size budget (pixels, frames, seconds), refused before decoding."""

    code, message = 222304, "image size is too large"


class Busy(FaceCoreError):
    """Admission refused the request: queue full, no worker in time, or too many body bytes."""

    code, message = 222901, "system busy"


# -- the licence of a server started with --license (docs/license.md) ------------------------------


class LicenseUnreachable(NetworkUnavailable):
    """A model route past the grace period while the authorisation service does not answer (or
    not with this server's shared secret). The table's "network not available" is the server's
    own request failing, which this is; the client's advice, retry, holds once authd is back."""


class LicenseRefused(FaceCoreError):
    """A model route while the authorisation service answers but grants no lease: the licence
    expired or is not yet valid, every seat is held, or the licence it serves does not verify or
    cover this server's models. The table's "rtse service return fail" is a service behind this
    one answering with a failure, which this is."""

    code, message = 222206, "rtse service return fail"


# -- 2231xx: the face library and the quality and liveness controls --------------------------------


class GroupNotFound(FaceCoreError):
    code, message = 223100, "group is not exist"


class GroupExists(FaceCoreError):
    code, message = 223101, "group is already exist"


class UserNotFound(FaceCoreError):
    code, message = 223103, "user is not exist"


class TooManyGroups(FaceCoreError):
    code, message = 223104, "group_list is too large"


class FaceExists(FaceCoreError):
    code, message = 223105, "face is already exist"


class FaceNotFound(FaceCoreError):
    code, message = 223106, "face is not exist"


class DstGroupNotFound(FaceCoreError):
    code, message = 223111, "dst group is not exist"


class FaceBlurred(FaceCoreError):
    code, message = 223114, "face is fuzzy"


class PoorLight(FaceCoreError):
    code, message = 223115, "face light is not good"


class IncompleteFace(FaceCoreError):
    code, message = 223116, "incomplete face"


class QualityUnmeasured(FaceCoreError):
    """quality_control asked of a face that has no quality measurement."""

    code, message = 223118, "quality control error"


class LivenessMissing(FaceCoreError):
    """liveness_control (or a liveness route) asked of a server without the liveness models."""

    code, message = 223119, "liveness control item error"

    def __init__(self, detail: str | None = None, param: str | None = None) -> None:
        super().__init__(
            detail
            or "the liveness models are not installed: run `make models LIVENESS_MODEL_DIR=<dir>` "
            "with the MiniFASNet ONNX files (README, Liveness)",
            param,
        )


class LivenessFailed(FaceCoreError):
    code, message = 223120, "liveness check fail"


class GroupDeleting(FaceCoreError):
    """The group's deletion is still running in the background."""

    code, message = 223128, "group was deleting"


# -- outside the table: Baidu's public-cloud codes, with its messages ------------------------------


class UnsupportedMethod(FaceCoreError):
    """A path that is not an API method (or a method the path does not take)."""

    code, message = 3, "Unsupported openapi method"


class NoPermission(FaceCoreError):
    """The credential is valid but not for this appid."""

    code, message = 6, "No permission to access data"


class IamFailed(FaceCoreError):
    """An API key / secret key pair, or a bce-auth-v1 signature, that was not accepted."""

    code, message = 14, "IAM Certification failed"


class RateLimited(FaceCoreError):
    """Too many failed authentication attempts from one address or for one key."""

    code, message = 18, "Open api qps request limit reached"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentication attempts; retry in {retry_after} s")
        self.retry_after = retry_after


class NotLicensed(NoPermission):
    """A route the licence does not sell: a detection-only licence asked for match, identify,
    multi-search or a library write. The table has no code for it; the public cloud's 6, "No
    permission to access data", is its answer to an application not granted an API, which this
    is. A subclass of NoPermission (which sends 6 for another appid's credential) so that one
    name catches one condition."""


class KeyNotFound(NoPermission):
    """Key management over HTTP (the console) named an API key that is not of the caller's appid,
    or no key at all: the same answer for both, so a caller learns nothing of other appids'
    keys."""


class TokenInvalid(FaceCoreError):
    code, message = 110, "Access token invalid or no longer valid"


class TokenExpired(FaceCoreError):
    code, message = 111, "Access token expired"


# The table's codes FaceCore never sends, and why.
_NO_SUCH_PARAM = "FaceCore takes no such parameter"
_BUSY = "FaceCore sends 222901 for every kind of overload"
UNSENT: dict[int, str] = {
    222004: _NO_SUCH_PARAM + " (op_app_id_list: no cross-appid operations)",
    222007: _NO_SUCH_PARAM + " (uid: the v3 routes name users user_id, 222018)",
    222008: _NO_SUCH_PARAM + " (face_id: v3 names faces face_token, 222025)",
    222009: _NO_SUCH_PARAM + " (quality_conf)",
    222011: _NO_SUCH_PARAM + " (uid_list)",
    222012: _NO_SUCH_PARAM + " (op_app_id)",
    222022: _NO_SUCH_PARAM + " (id_card_number: no identity-card verification)",
    222023: _NO_SUCH_PARAM + " (name: no identity-card verification)",
    222026: _NO_SUCH_PARAM + " (max_star_num: no celebrity search)",
    222205: "a second 'network not available' (sic: availablel): LicenseUnreachable sends 222201",
    222300: "a face that cannot be stored is a system error (222302); nothing is half stored",
    222301: "faces are read from the local library; a failed read is a system error (222302)",
    222303: "faces are read from the local library; a failed read is a system error (222302)",
    223102: "face/add and user/copy create a missing user and add to an existing one",
    223110: _NO_SUCH_PARAM + " (uid_list)",
    223112: _NO_SUCH_PARAM + " (quality_conf)",
    223113: "no occlusion model: occlusion is never checked (GET /capabilities)",
    223117: _NO_SUCH_PARAM + " (app_list)",
    **{c: "no occlusion model: occlusion is never checked" for c in range(223121, 223128)},
    **{c: _BUSY for c in range(222902, 222917)},
    222361: _BUSY,
}


def sent() -> list[type[FaceCoreError]]:
    """Every error class with a wire code, in code order (not the private bases, such as
    _Unnamed, that only share a behaviour among their subclasses)."""
    found: list[type[FaceCoreError]] = []
    todo: list[type[FaceCoreError]] = [FaceCoreError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.code is not None and cls not in found and not cls.__name__.startswith("_"):
            found.append(cls)
    return sorted(found, key=lambda c: c.code or 0)
