"""The image codec of the project (torch-free): read any photo faithfully, write it back faithfully.

Reading gives a :class:`Picture`: RGB pixels as uint8, uint16 or float32 in [0, 1] (grey
images repeated to three channels and marked ``grey``), alpha kept aside, EXIF orientation
applied to the pixels, and the metadata that still describes them. Writing goes back to the
source's family (grey stays grey, 16-bit stays 16-bit, alpha and lossless stay) where the
output format can hold it; otherwise the conversion is stated in the returned notes, or the
write is refused. Never wrong pixels:

- 16-bit colour PNGs (which Pillow reduces to 8 bits) are decoded and encoded here;
- int32 images outside 0..65535, float images outside [0, 1], multi-frame files and 16-bit
  colour TIFFs are refused with the reason;
- CMYK is converted to sRGB through its own ICC profile, and a profile is only written where
  it still describes the pixels (an RGB profile on RGB pixels, a grey one on grey pixels);
- EXIF is kept (orientation reset to 1, since the pixels are turned) where the format has EXIF.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from .atomic import atomic_write_bytes
from .text import read_bounded

#: Refuse images above this many pixels (decompression bombs); 100 MP covers real photos.
MAX_PIXELS = 100_000_000
#: The largest image file read: MAX_PIXELS of 16-bit RGBA uncompressed, plus room for metadata.
MAX_FILE_BYTES = MAX_PIXELS * 8 + (64 << 20)
#: Output suffix -> Pillow format name; the suffixes read as images.
IMAGE_CODECS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}
IMAGE_SUFFIXES = tuple(IMAGE_CODECS)
_LOSSLESS_FORMATS = {"PNG", "BMP", "TIFF"}
_EXIF_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP"}
_ORIENTATION = 0x0112
#: The first-directory tags that describe a photo (camera, time, author...), kept in outputs; the
#: rest of a TIFF's first directory describes its pixel layout (size, photometric, palette,
#: strips) and belongs to the input file alone.
_DESCRIPTIVE_TAGS = frozenset(
    {0x010E, 0x010F, 0x0110, 0x0112, 0x0131, 0x0132, 0x013B, 0x013C, 0x8298, 0x011A, 0x011B, 0x0128}
)
_SUB_IFDS = (0x8769, 0x8825)  # the Exif and GPS directories
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image that cannot be read or written faithfully; the message says why and what to do."""


@dataclass
class Picture:
    """Pixels and the metadata that describes them."""

    rgb: np.ndarray  # (H, W, 3) uint8 | uint16 | float32 in [0, 1]
    alpha: np.ndarray | None = None  # (H, W), same dtype as rgb
    grey: bool = False  # the source had one colour channel
    icc: bytes | None = None  # only a profile that describes ``rgb`` (RGB, or GRAY when grey)
    exif: bytes | None = None  # orientation already applied to the pixels
    lossless: bool = True  # the source was stored losslessly
    dpi: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)  # conversions made on reading


# ------------------------------------------------------------------ float conversion
def to_float(image: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    """uint8/uint16/float image -> float32 in [0, 1], and the dtype to return to."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0, image.dtype
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0, image.dtype
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32), image.dtype
    raise TypeError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float")


def from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`to_float` (rounded and clipped for integer types)."""
    image = np.clip(image, 0.0, 1.0)
    if dtype == np.uint8:
        return (image * 255.0 + 0.5).astype(np.uint8)
    if dtype == np.uint16:
        return (image * 65535.0 + 0.5).astype(np.uint16)
    return image.astype(dtype)


# ------------------------------------------------------------------ 16-bit PNG (Pillow keeps 8 bits)
def _png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) of PNG bytes, or None."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, colour, interlace


def _unfilter(filtered: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Undo PNG's per-row filters on (H, W, bpp) bytes, one anti-diagonal at a time (each pixel
    needs its left, upper and upper-left neighbours), so the work is vectorised."""
    h, w, bpp = filtered.shape
    out = np.zeros((h + 1, w + 1, bpp), np.int16)  # a zero row above and column to the left
    f = filtered.astype(np.int16)
    for t in range(h + w - 1):
        y = np.arange(max(0, t - w + 1), min(h - 1, t) + 1)
        x = t - y
        a, b, c = out[y + 1, x], out[y, x + 1], out[y, x]
        kind = kinds[y][:, None]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([kind == 1, kind == 2, kind == 3, kind == 4], [a, b, (a + b) // 2, paeth], 0)
        out[y + 1, x + 1] = (f[y, x] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def _read_png16(data: bytes) -> np.ndarray:
    """Pixels of a non-interlaced 16-bit PNG as (H, W, C) uint16."""
    w, h, _, colour, interlace = _png_header(data)
    if interlace:
        raise ImageError("interlaced 16-bit PNG is not supported; re-save it without interlacing")
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    pos, idat = 8, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    row = 1 + w * channels * 2
    raw = zlib.decompressobj().decompress(b"".join(idat), h * row + 1)
    if len(raw) != h * row:
        raise ImageError(f"truncated PNG data ({len(raw)} of {h * row} bytes)")
    rows = np.frombuffer(raw, np.uint8).reshape(h, row)
    kinds = rows[:, 0]
    if kinds.max(initial=0) > 4:
        raise ImageError("corrupt PNG (unknown row filter)")
    pixels = _unfilter(rows[:, 1:].reshape(h, w, channels * 2), kinds)
    return pixels.reshape(h, w * channels, 2).view(">u2")[..., 0].astype(np.uint16).reshape(h, w, channels)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png16_bytes(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the channel count) of (H, W, C) uint16."""
    h, w, c = pixels.shape
    raw = np.zeros((h, 1 + w * c * 2), np.uint8)  # filter byte 0 (none) on every row
    raw[:, 1:] = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, -1)
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0))]
    if icc:
        out.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if exif:
        out.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    out += [_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _chunk(b"IEND", b"")]
    return b"".join(out)


# ------------------------------------------------------------------ reading
def _webp_lossless(data: bytes) -> bool:
    """Whether a WebP file's image chunk is VP8L (lossless)."""
    pos = 12
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if kind in (b"VP8L", b"VP8 "):
            return kind == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


def _oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to (H, W[, C]) pixels."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](pixels)) if orientation in ops else pixels


def _profile_space(icc: bytes | None) -> bytes | None:
    return icc[16:20] if icc and len(icc) >= 20 else None


def _cmyk_to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            notes.append("CMYK converted to sRGB through its ICC profile")
            return rgb
        except (ImageCms.PyCMSError, OSError):
            pass
    notes.append("CMYK converted to RGB without a usable profile (colours approximate)")
    return im.convert("RGB")


def _pixels(im: Image.Image, data: bytes, notes: list[str]) -> tuple[np.ndarray, bool]:
    """(H, W, C) array with C in 1..4 (alpha last) and whether the source is grey."""
    header = _png_header(data)
    if header and header[2] == 16 and header[3] in (2, 4, 6):
        pixels = _read_png16(data)
        if "transparency" in im.info:
            notes.append("the 16-bit PNG's tRNS colour-key transparency was dropped (alpha channels are kept)")
        return pixels, pixels.shape[2] <= 2
    if im.format == "TIFF" and 16 in tuple(im.tag_v2.get(258, ())) and im.mode not in ("I;16", "I;16B", "I;16L"):
        raise ImageError("16-bit colour TIFF cannot be read at full depth here; save it as a 16-bit PNG")
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None], True
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(
                f"32-bit integer pixels span {values.min()}..{values.max()}, outside 0..65535; "
                "scale them to 16 bits first"
            )
        return values.astype(np.uint16)[..., None], True
    if mode == "F":
        values = np.asarray(im, dtype=np.float32)
        if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 1)):
            raise ImageError("float pixels must lie in [0, 1] (found values outside); scale them first")
        return values[..., None], True
    if mode == "CMYK":
        im = _cmyk_to_rgb(im, notes)
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("1", "L"):
        im = im.convert("LA" if "transparency" in im.info else "L")  # a tRNS colour key becomes alpha
    elif mode in ("LA", "La", "PA"):
        im = im.convert("LA")
    elif mode in ("RGBA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")  # a tRNS colour key becomes alpha
    elif mode != "RGB":
        im = im.convert("RGB")
    pixels = np.asarray(im)
    return (pixels if pixels.ndim == 3 else pixels[..., None]), im.mode in ("L", "LA")


def _photo_exif(im: Image.Image, notes: list[str]) -> Image.Exif:
    """The photo's EXIF without the file's own layout tags (a TIFF's first directory also holds
    its size, photometric and palette): descriptive tags and the Exif and GPS directories. An
    unreadable EXIF block is dropped with a note; it never costs the picture."""
    kept = Image.Exif()
    try:
        exif = im.getexif()
        for tag, value in exif.items():
            if tag in _DESCRIPTIVE_TAGS:
                kept[tag] = value
        for ifd in _SUB_IFDS:
            if ifd in exif:
                sub = exif.get_ifd(ifd)
                if sub:
                    kept[ifd] = dict(sub)
        kept.tobytes()  # what writing will do: fail here, not in the encoder
    except Exception as e:  # malformed EXIF comes in many shapes; the pixels are still good
        notes.append(f"unreadable EXIF dropped ({type(e).__name__})")
        return Image.Exif()
    return kept


def read_image(path: str | Path) -> Picture:
    """Read an image file faithfully (see the module docstring); :class:`ImageError` if it cannot be."""
    path = Path(path)
    if path.is_dir():
        raise ImageError("is a folder, not an image")
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except ValueError as e:  # the message without the path: the caller names the file
        raise ImageError(str(e).removeprefix(f"{path}: ")) from None
    try:
        with warnings.catch_warnings():
            # our own MAX_PIXELS guard below is the limit (Pillow's default warns from 89 MP)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # reads the header only
            if im.width * im.height > MAX_PIXELS:  # checked before any pixel is decoded
                raise ImageError(
                    f"{im.width}x{im.height} is more than {MAX_PIXELS:,} pixels (decompression bomb guard)"
                )
            if im.width == 0 or im.height == 0:
                raise ImageError("zero-size image")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ImageError(f"has {frames} frames (animated or multi-page); save the frame to restore on its own")
            im.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"too many pixels (decompression bomb guard: {e})") from None
    except ImageError:
        raise
    except Image.UnidentifiedImageError:  # Pillow's message names its in-memory buffer, not the file
        raise ImageError("not a readable image (not an image, or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as e:
        raise ImageError(f"not a readable image ({e})") from None
    notes: list[str] = []
    pixels, grey = _pixels(im, data, notes)
    exif = _photo_exif(im, notes)
    orientation = exif.get(_ORIENTATION, 1)
    pixels = _oriented(pixels, orientation if orientation in range(1, 9) else 1)
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    colour = pixels[..., :1] if grey else pixels[..., :3]
    alpha = pixels[..., -1] if pixels.shape[2] in (2, 4) else None
    icc = im.info.get("icc_profile")
    if _profile_space(icc) != (b"GRAY" if grey else b"RGB "):
        icc = None  # e.g. the CMYK profile of a converted CMYK JPEG no longer describes the pixels
    lossless = im.format in _LOSSLESS_FORMATS and im.info.get("compression") not in ("jpeg", "tiff_jpeg")
    if im.format == "WEBP":
        lossless = _webp_lossless(data)
    dpi = im.info.get("dpi")
    return Picture(
        rgb=np.ascontiguousarray(np.repeat(colour, 3, axis=2) if grey else colour),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        grey=grey,
        icc=icc or None,
        exif=exif.tobytes() if len(exif) else None,
        lossless=lossless,
        dpi=tuple(float(v) for v in dpi) if dpi else None,
        notes=notes,
    )


def read_rgb_float(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) float32 in [0, 1] at its full bit depth (alpha ignored)."""
    return to_float(read_image(path).rgb)[0]


# ------------------------------------------------------------------ writing
def _to_depth(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return a if a.dtype == dtype else from_float(to_float(a)[0], dtype)


def encode_image(pic: Picture, fmt: str) -> tuple[bytes, list[str]]:
    """Encode ``pic`` in Pillow format ``fmt``; returns the bytes and the conversions made."""
    notes: list[str] = []
    rgb, alpha = pic.rgb, pic.alpha
    if alpha is not None and fmt == "JPEG":
        notes.append("alpha dropped: JPEG has no transparency")
        alpha = None
    depth = rgb.dtype
    if depth == np.float32 and not (fmt == "TIFF" and pic.grey and alpha is None):
        depth = np.dtype(np.uint16) if fmt in ("PNG", "TIFF") else np.dtype(np.uint8)
        notes.append(f"float pixels written as {depth.itemsize * 8}-bit ({fmt} holds no float colour)")
    if depth == np.uint16 and fmt in ("JPEG", "WEBP", "BMP"):
        depth = np.dtype(np.uint8)
        notes.append(f"16-bit reduced to 8-bit ({fmt} holds 8 bits per channel)")
    if depth == np.uint16 and fmt == "TIFF" and not (pic.grey and alpha is None):
        raise ImageError(
            "16-bit colour or alpha cannot be written as TIFF here; use --image-format png (keeps 16 bits)"
        )
    rgb = _to_depth(rgb, depth)
    alpha = None if alpha is None else _to_depth(alpha, depth)
    colour = rgb
    if pic.grey:  # the model returns three channels; their mean is the grey picture
        grey = rgb.astype(np.float32).mean(axis=2, keepdims=True)
        colour = grey if depth == np.float32 else grey.round().astype(depth)
    exif = pic.exif if fmt in _EXIF_FORMATS else None
    if pic.exif and exif is None:
        notes.append(f"EXIF dropped ({fmt} holds none)")
    if depth == np.uint16 and fmt == "PNG" and (not pic.grey or alpha is not None):
        pixels = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
        return _png16_bytes(pixels, pic.icc, exif), notes
    if depth == np.uint16:
        im = Image.fromarray(colour[..., 0])  # 16-bit grey: I;16
    elif depth == np.float32:
        im = Image.fromarray(colour[..., 0].astype(np.float32), mode="F")
    else:
        im = Image.fromarray(colour[..., 0] if pic.grey else colour)
        if alpha is not None:
            im = im.convert("LA" if pic.grey else "RGBA")
            im.putalpha(Image.fromarray(alpha))
            if fmt == "BMP" and pic.grey:
                im = im.convert("RGBA")
    params: dict = {}
    if pic.icc:
        params["icc_profile"] = pic.icc
    if exif:
        params["exif"] = exif
    if pic.dpi and fmt in ("PNG", "JPEG", "TIFF"):
        params["dpi"] = pic.dpi
    if fmt == "JPEG":
        params["quality"] = 95
    elif fmt == "WEBP" and pic.lossless:
        params["lossless"] = True
    elif fmt == "WEBP":
        params["quality"] = 95
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt, **params)
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"cannot be written as {fmt} ({e}); choose another --format") from None
    return buf.getvalue(), notes


def write_image(pic: Picture, path: str | Path) -> list[str]:
    """Encode ``pic`` by ``path``'s suffix and write it atomically; returns the conversions made."""
    path = Path(path)
    fmt = IMAGE_CODECS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot write {path.suffix!r} files; use one of {', '.join(IMAGE_SUFFIXES)}")
    data, notes = encode_image(pic, fmt)
    atomic_write_bytes(path, data)
    return notes
