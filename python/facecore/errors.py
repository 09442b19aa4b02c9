"""FaceCore's exception hierarchy.

Every error the API raises for a caller's mistake is a :class:`FaceCoreError`. Errors that map onto
the Baidu v3 error table carry that ``code`` so the server turns exception -> envelope in one place.
Argument errors of the library API (wrong dtype, shape, NaN, ...) are also ``TypeError`` /
``ValueError`` / ``KeyError`` subclasses, so ordinary Python handling works.
"""

from __future__ import annotations


class FaceCoreError(Exception):
    """Base class. ``code`` is the v3 error code, or None when the error has no wire form."""

    code: int | None = None

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(FaceCoreError, ValueError):
    """A value is out of range or malformed (names the argument)."""


class InvalidType(FaceCoreError, TypeError):
    """An array or value has the wrong type or dtype (names the argument)."""


class UnknownId(FaceCoreError, KeyError):
    """An id given for removal or lookup is not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ImageUnreadable(FaceCoreError, ValueError):
    """The bytes are not an image we can decode (not an image, truncated, too small)."""

    code = 222203


class ImageTooLarge(FaceCoreError, ValueError):
    """The image's dimensions exceed the pixel limit (refused from the header, before decoding)."""

    code = 222304
