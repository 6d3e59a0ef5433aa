"""Cheap checks of image files before they are trusted: size from the header, and completeness.

A truncated JPEG decodes without an error (libjpeg fills the rest with grey and warns on
stderr without naming the file), and a truncated PNG may too; the functions here read a
file's first and last few kilobytes, so a whole session can be checked before any stage
runs, and a damaged view is skipped with a warning naming the file instead of becoming a
grey training crop.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"
_TAIL_BYTES = 64
_HEAD_BYTES = 1 << 17  # JPEG: SOF sits after the APP segments (EXIF up to 64 KiB)
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not SOFs
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size_from_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` in pixels read from a PNG's IHDR or a JPEG's SOF segment; None if unknown.

    Only the file's first bytes are read. Other formats (BMP, ...) give None: the caller
    then learns the size when it decodes the image.

    Example:
        >>> import tempfile, numpy as np, cv2
        >>> p = Path(tempfile.mkdtemp()) / "a.png"
        >>> _ = cv2.imwrite(str(p), np.zeros((5, 7), np.uint8))
        >>> image_size_from_header(p)
        (7, 5)
    """
    with open(path, "rb") as fo:
        head = fo.read(_HEAD_BYTES)
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 24 and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    if head.startswith(_JPEG_SOI):
        i = 2
        while i + 4 <= len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
                i += 2
                continue
            (length,) = struct.unpack(">H", head[i + 2 : i + 4])
            if marker in _JPEG_SOF and i + 9 <= len(head):
                h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                return int(w), int(h)
            if marker == 0xDA:  # start of scan before any SOF: not a valid JPEG
                return None
            i += 2 + length
    return None


def image_damage(path: str | os.PathLike) -> str | None:
    """Why an image file is damaged (truncated), or None when it looks whole.

    JPEG: the last end-of-image marker must come after the last start-of-scan marker (an
    embedded EXIF thumbnail has an end marker of its own, but before the main scan; the
    coded data cannot hold ``FF D9`` since a 0xFF byte there is stuffed). PNG: the file must
    end with its IEND chunk. Both are first checked on the last few bytes; only a JPEG
    with bytes after its end marker is read in full. Other formats are not checked.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fo:
        head = fo.read(8)
        fo.seek(max(0, size - _TAIL_BYTES))
        tail = fo.read()
    if head.startswith(_PNG_SIGNATURE):
        return None if b"IEND" in tail[-12:] else "truncated PNG (no IEND chunk at its end)"
    if head.startswith(_JPEG_SOI):
        if tail.rstrip(b"\x00\r\n\t ").endswith(_JPEG_EOI):
            return None
        data = path.read_bytes()
        sos = data.rfind(_JPEG_SOS)
        if sos < 0:
            return "damaged JPEG (it holds no image data)"
        if data.rfind(_JPEG_EOI) > sos:
            return None  # bytes after the end marker (some cameras pad their files): the image is whole
        return "truncated JPEG (the image data ends before its end-of-image marker)"
    return None


# ---------------------------------------------------------------------------------------
# who made a PNG: a tEXt chunk, so handanno's own masks can be told apart from a user's
_MADE_BY_KEY = b"handanno-source"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_source(png: bytes, source: str) -> bytes:
    """The PNG ``png`` with a text chunk ``handanno-source`` = ``source`` after its header.

    Image viewers and decoders ignore the chunk; :func:`png_source` reads it back.
    """
    if not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    end_ihdr = 8 + 8 + 13 + 4
    return png[:end_ihdr] + _png_chunk(b"tEXt", _MADE_BY_KEY + b"\x00" + source.encode("latin-1")) + png[end_ihdr:]


def png_source(path: str | os.PathLike) -> str | None:
    """The ``handanno-source`` text of a PNG written with :func:`png_with_source`, else None.

    Reads the chunks before the image data only.
    """
    with open(path, "rb") as fo:
        if fo.read(8) != _PNG_SIGNATURE:
            return None
        while True:
            head = fo.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I", head[:4])[0], head[4:]
            if kind in (b"IDAT", b"IEND"):
                return None
            data = fo.read(length)
            fo.read(4)  # crc
            if kind == b"tEXt" and data.startswith(_MADE_BY_KEY + b"\x00"):
                return data[len(_MADE_BY_KEY) + 1 :].decode("latin-1")
