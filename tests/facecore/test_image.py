"""decode_image: every supported kind of image decodes upright to BGR uint8; every bad one gets a
coded FaceCoreError (222203 unreadable, 222304 too large), never a crash or a half image."""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from facecore.errors import ImageTooLarge, ImageUnreadable, InvalidType
from facecore.pipeline.image import PEAK_BYTES_PER_PIXEL, decode_image, image_size
from PIL import Image

from tests.conftest import SHARED_DATA

LFW_IMAGE = SHARED_DATA / "lfw" / "images" / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return LFW_IMAGE.read_bytes()


@pytest.fixture(scope="module")
def pil(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_jpeg_is_bgr(jpeg: bytes, pil: Image.Image) -> None:
    bgr = decode_image(jpeg)
    assert bgr.shape == (250, 250, 3) and bgr.dtype == np.uint8 and bgr.flags.c_contiguous
    np.testing.assert_array_equal(bgr[:, :, ::-1], np.asarray(pil))


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP", "TIFF", "GIF"])
def test_other_formats(pil: Image.Image, fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    bgr = decode_image(_encode(pil, fmt, **kw))
    assert bgr.shape == (250, 250, 3)
    if fmt != "GIF":  # GIF is palette-quantised
        np.testing.assert_array_equal(bgr[:, :, ::-1], np.asarray(pil))


def test_grey_rgba_cmyk_16bit(pil: Image.Image) -> None:
    grey = np.asarray(pil.convert("L"))
    out = decode_image(_encode(pil.convert("L"), "PNG"))
    assert out.shape == (250, 250, 3)
    np.testing.assert_array_equal(out[:, :, 0], grey)
    np.testing.assert_array_equal(out[:, :, 2], grey)

    rgba = pil.convert("RGBA")
    np.testing.assert_array_equal(decode_image(_encode(rgba, "PNG"))[:, :, ::-1], np.asarray(pil))
    transparent = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert decode_image(_encode(transparent, "PNG")).min() == 255  # composited on white

    cmyk = decode_image(_encode(pil.convert("CMYK"), "JPEG", quality=95))
    assert np.abs(cmyk[:, :, ::-1].astype(int) - np.asarray(pil).astype(int)).mean() < 6

    grey16 = Image.fromarray(grey.astype(np.uint16) * 257)
    np.testing.assert_array_equal(decode_image(_encode(grey16, "PNG"))[:, :, 1], grey)


def test_exif_orientation_is_applied(pil: Image.Image) -> None:
    wide = pil.resize((200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    out = decode_image(_encode(wide, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (200, 100, 3)
    expected = np.asarray(wide.transpose(Image.Transpose.ROTATE_270))[:, :, ::-1]
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all" * 10,
        b"\xff\xd8\xff\xe0" + b"\x00" * 100,  # JPEG magic, then nothing
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 50,  # PNG magic, broken header
    ],
    ids=["empty", "text", "jpeg-magic", "png-magic"],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageUnreadable) as e:
        decode_image(data)
    assert e.value.code == 222203


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(pil: Image.Image, fmt: str) -> None:
    data = _encode(pil, fmt)
    for cut in (len(data) // 3, len(data) - 40):
        with pytest.raises(ImageUnreadable) as e:
            decode_image(data[:cut])
        assert e.value.code == 222203


def test_tiny_image() -> None:
    with pytest.raises(ImageUnreadable, match="1x1"):
        decode_image(_encode(Image.new("RGB", (1, 1)), "PNG"))
    assert decode_image(_encode(Image.new("RGB", (16, 16)), "PNG")).shape == (16, 16, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression bomb shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(7000, 6000), (100_000, 100_000)])
def test_giant_dimensions_refused_from_header(size: tuple[int, int]) -> None:
    data = _png_header_only(*size)
    assert len(data) < 100
    if size[0] * size[1] < 100_000_000:
        assert image_size(data) == size
    with pytest.raises(ImageTooLarge) as e:
        decode_image(data)
    assert e.value.code == 222304


def test_pixel_limit_is_configurable(pil: Image.Image) -> None:
    data = _encode(pil, "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=250 * 250 - 1)
    assert decode_image(data, max_pixels=250 * 250).shape == (250, 250, 3)


def test_wrong_type() -> None:
    with pytest.raises(InvalidType):
        decode_image("a string")  # type: ignore[arg-type]


# Pillow decodes all of these, but only the documented six may be reached from a request.
UNDOCUMENTED = (
    "PCX",
    "SGI",
    "TGA",
    "ICO",
    "JPEG2000",
    "QOI",
    "DDS",
    "AVIF",
    "PPM",
    "MSP",
    "SPIDER",
    "BLP",
    "DIB",
    "ICNS",
    "XBM",
)


@pytest.mark.parametrize("fmt", UNDOCUMENTED)
def test_only_documented_formats_are_decoded(pil: Image.Image, fmt: str) -> None:
    modes = {"MSP": "1", "XBM": "1", "SPIDER": "L", "BLP": "P"}  # what each writer takes
    img = pil.convert(modes[fmt]) if fmt in modes else pil
    try:
        data = _encode(img.resize((64, 64)), fmt)
    except (OSError, KeyError, ValueError) as e:  # a codec this Pillow build lacks
        pytest.skip(f"this Pillow cannot write {fmt}: {e}")
    assert Image.open(io.BytesIO(data)).load() is not None  # Pillow itself would decode it
    with pytest.raises(ImageUnreadable, match="supported format"):
        decode_image(data)
    with pytest.raises(ImageUnreadable):
        image_size(data)


def test_a_documented_magic_with_another_body_is_refused() -> None:
    """The magic picks the one decoder tried: a JPEG signature on a PNG body is unreadable."""
    png = _encode(Image.new("RGB", (32, 32)), "PNG")
    with pytest.raises(ImageUnreadable):
        decode_image(b"\xff\xd8\xff" + png)


_PEAK_SCRIPT = """
import resource, sys
from pathlib import Path
from facecore.pipeline.image import decode_image
data = Path(sys.argv[1]).read_bytes()
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
before = hwm()
out = decode_image(data)
print(hwm() - before, out.shape[0] * out.shape[1])
"""


@pytest.mark.parametrize(
    ("mode", "side", "fmt"),
    [("I;16", 6000, "PNG"), ("RGBA", 3000, "PNG"), ("RGB", 4000, "JPEG"), ("I", 3000, "TIFF")],
)
def test_decoding_peaks_at_the_stated_bytes_a_pixel(
    tmp_path: Path, mode: str, side: int, fmt: str
) -> None:
    """One decode holds at most PEAK_BYTES_PER_PIXEL bytes a pixel at once (measured as the
    growth of the process's high-water mark, in a fresh process): a 70 KB 16-bit 6000x6000 PNG
    took 1.7 GB through float64 before."""
    if mode == "RGB":
        img = Image.effect_noise((side, side), 64).convert("RGB")
    else:
        img = Image.new(mode, (side, side))
    path = tmp_path / f"big.{fmt.lower()}"
    img.save(path, fmt)
    del img
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True
    )
    grown, pixels = (int(v) for v in out.stdout.split())
    assert pixels == side * side
    assert grown <= PEAK_BYTES_PER_PIXEL * pixels + 16 * 2**20, (grown / pixels, mode)
