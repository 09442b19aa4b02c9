"""Image decoding for the pipeline: bytes in, an upright BGR uint8 array out, or a coded error.

Only the documented formats are decoded (JPEG, PNG, BMP, WebP, TIFF, GIF), each recognised by its
magic bytes before Pillow sees the data, so none of Pillow's other decoders (PCX, SGI, TGA, ICO,
JPEG 2000, QOI, DDS, AVIF, PPM, ...) is reachable from a request. The header is read next and the
pixel count checked before any pixel is decoded, so a small file that claims 100000x100000 pixels
(a decompression bomb) costs nothing. Decoding uses Pillow because it reports truncated files
(OpenCV silently returns a half-grey image), reads CMYK, 16-bit, palette and alpha images, and
exposes EXIF orientation, which is applied so faces come out upright.

Memory: every conversion below works in place or frees its input before the next copy, so one
decode peaks at PEAK_BYTES_PER_PIXEL bytes a pixel at most (7 for an RGB JPEG), 432 MB at the
default 36-megapixel limit, whatever the bit depth (a 16-bit PNG used to go through float64: 1.7 GB
at 36 MP).
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecore.errors import ImageTooLarge, ImageUnreadable, InvalidType

DEFAULT_MAX_PIXELS = 36_000_000  # over 36 megapixels: ImageTooLarge (docs/api.md, --max-pixels)
MIN_SIDE = 16  # smaller images cannot hold a detectable face (MTCNN's smallest window is 12 px)
PEAK_BYTES_PER_PIXEL = 12  # the most one decode holds at once (RGBA: image, its RGBA, canvas)
SUPPORTED = "JPEG, PNG, BMP, WebP, TIFF, GIF"
# Pillow format name -> the magic bytes its files start with (WebP: RIFF....WEBP, checked below).
_MAGIC = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "WEBP": (b"RIFF",),
}


def image_format(data: bytes) -> str:
    """The Pillow format of `data` by its magic bytes; ImageUnreadable for any other."""
    head = bytes(data[:16])
    for name, magics in _MAGIC.items():
        if head.startswith(magics) and (name != "WEBP" or head[8:12] == b"WEBP"):
            return name
    raise ImageUnreadable(f"not an image in a supported format ({SUPPORTED})")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone, or ImageUnreadable."""
    with _open(data, max_pixels=None) as img:
        return img.size


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `data` (JPEG, PNG, BMP, WebP, TIFF, GIF: first frame) to an HxWx3 BGR uint8 array,
    rotated per EXIF orientation. Raises ImageUnreadable for anything that is not a whole
    image of at least 16x16 pixels in one of those formats, ImageTooLarge above
    `max_pixels`. Peak memory: PEAK_BYTES_PER_PIXEL x pixels at most."""
    with _open(data, max_pixels) as img:
        try:
            img.load()  # raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES stays False)
            upright = ImageOps.exif_transpose(img)
            if upright is not None and upright is not img:
                img.close()  # the rotated copy replaces it: never both alive with what follows
                img = upright
            return _to_bgr8(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageUnreadable(f"image cannot be decoded: {e}") from None
        finally:
            img.close()


class _open:
    """Context manager: Pillow image with the format, header and size limits checked."""

    def __init__(self, data: bytes, max_pixels: int | None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidType(f"image data must be bytes, got {type(data).__name__}")
        if len(data) == 0:
            raise ImageUnreadable("image data is empty")
        self.format = image_format(data)
        self.data = data
        self.max_pixels = max_pixels

    def __enter__(self) -> Image.Image:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's warning would just be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(self.data), formats=[self.format])
            except Image.DecompressionBombError as e:
                raise ImageTooLarge(f"image header claims too many pixels: {e}") from None
            except UnidentifiedImageError:
                raise ImageUnreadable(
                    f"not a readable {self.format} image (supported: {SUPPORTED})"
                ) from None
            except (OSError, SyntaxError, ValueError) as e:
                raise ImageUnreadable(f"image header cannot be read: {e}") from None
        self.img = img
        w, h = img.size
        if self.max_pixels is not None and w * h > self.max_pixels:
            img.close()
            raise ImageTooLarge(
                f"image is {w}x{h} = {w * h / 1e6:.1f} megapixels, above the limit of "
                f"{self.max_pixels / 1e6:.1f}"
            )
        if min(w, h) < MIN_SIDE:
            img.close()
            raise ImageUnreadable(f"image is {w}x{h}: both sides must be at least {MIN_SIDE} px")
        return img

    def __exit__(self, *exc: object) -> None:
        self.img.close()


def _to_bgr8(img: Image.Image) -> np.ndarray:
    """BGR uint8 of a loaded image. Each step frees (closes) what it no longer needs before the
    next allocation; the comments give the bytes a pixel alive at the peak of each path."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth grey: scale to 8 bits rather than clipping at 255, in float32 in place
        # (16-bit: 2 + 2, then 2 + 4, then 4 + 1 + 3; 32-bit: 4 + 4, then 4 + 1 + 3).
        raw = _pixels(img)
        img.close()
        a = raw.astype(np.float32)
        del raw
        top = 65535.0 if mode.startswith("I;16") else max(float(a.max()), 1.0)
        a *= 255.0 / top
        np.clip(a, 0, 255, out=a)
        grey = a.astype(np.uint8)
        del a
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: transparent regions of logos/stickers are background, not black
        # (the image <= 4, its RGBA 4, the white canvas 4; then the canvas 4 + the array 3).
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba)
        rgba.close()
        img.close()
        img = canvas
    elif mode == "L":
        grey = _pixels(img)  # 1 + 1, then 1 + 3
        img.close()
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    elif mode != "RGB":
        rgb = img.convert("RGB")  # CMYK, P, YCbCr, 1, ...: at most 4 + 4
        img.close()
        img = rgb
    # RGB (Pillow holds 4 a pixel) -> a 3-byte array, swapped to BGR in place: 4 + 3.
    out = _pixels(img)
    img.close()
    cv2.cvtColor(out, cv2.COLOR_RGB2BGR, dst=out)
    return out


_BAND_BYTES = 4 << 20


def _pixels(img: Image.Image) -> np.ndarray:
    """A loaded image's pixels as a new writable array, copied a band of rows at a time.
    np.asarray(img) would go through Image.tobytes, which holds its encoded chunks and their join
    beside the image: up to three copies of the pixels at once."""
    w, h = img.size
    row = np.asarray(img.crop((0, 0, w, 1)))
    out = np.empty((h, *row.shape[1:]), row.dtype)
    step = max(1, _BAND_BYTES // max(1, row.nbytes))
    for y in range(0, h, step):
        out[y : y + step] = np.asarray(img.crop((0, y, w, min(h, y + step))))
    return out


CROP_SCALE = 2.0  # the stored registration image: the face box enlarged this much
CROP_MAX_SIDE = 400
CROP_QUALITY = 90


def face_crop(image: np.ndarray, box: np.ndarray) -> bytes:
    """JPEG of a square CROP_SCALE times the box's longer side, centred on it and clipped to the
    image, longest side at most CROP_MAX_SIDE: enough context for reindex to find the face again."""
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * CROP_SCALE / 2
    a, b = max(0, int(cx - half)), max(0, int(cy - half))
    c, d = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    crop = image[b:d, a:c]
    side = max(crop.shape[:2])
    if side > CROP_MAX_SIDE:
        f = CROP_MAX_SIDE / side
        size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding of the face crop failed")
    return bytes(buf)
