"""Reading a pattern file's bytes safely: size limit, gzip, binary detection, decoding."""
from __future__ import annotations

import gzip
import io
import os
import zlib

from .pattern import MAX_FILE_BYTES, PatternFormatError

_BINARY_MAGIC = {
    b"PK\x03\x04": "a zip archive (e.g. Bruker .brml or a zipped export); unzip it and read the data file inside",
    b"RAW1.01": "a Bruker RAW binary file (v3); export it as .xy or .xrdml from the instrument software",
    b"RAW2": "a Bruker RAW binary file (v2); export it as .xy or .xrdml from the instrument software",
    b"RAW ": "a Bruker RAW binary file (v1); export it as .xy or .xrdml from the instrument software",
    b"\x89HDF": "an HDF5/NeXus file, which this reader does not handle",
    b"\x89PNG": "a PNG image, not a pattern",
    b"%PDF": "a PDF document, not a pattern",
}


def source_name(path) -> str:
    if isinstance(path, (bytes, bytearray)):
        raise TypeError("read_pattern expects a path (str or os.PathLike), not bytes")
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"read_pattern expects a path (str or os.PathLike), not {type(path).__name__}") from None


def read_bytes(path) -> tuple[bytes, str]:
    """(file content, source name); gzip-compressed files are decompressed (same size limit)."""
    source = source_name(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"pattern file not found: {source!r}")
    if os.path.isdir(source):
        raise IsADirectoryError(f"{source!r} is a directory; give the pattern file inside it")
    size = os.path.getsize(source)
    if size > MAX_FILE_BYTES:
        raise PatternFormatError(
            f"file is {size / 2**20:.0f} MiB, more than the {MAX_FILE_BYTES // 2**20} MiB limit for a measured "
            "pattern; is this really a 1-D powder pattern (not an image or a stack of scans)?", source)
    with open(source, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                data = gz.read(MAX_FILE_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise PatternFormatError(f"corrupt gzip data: {exc}", source) from None
        if len(data) > MAX_FILE_BYTES:
            raise PatternFormatError(
                f"decompressed content exceeds the {MAX_FILE_BYTES // 2**20} MiB limit", source)
    return data, source


def refuse_known_binary(data: bytes, source: str) -> None:
    """PatternFormatError naming the kind of file when ``data`` starts with a known binary signature."""
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise PatternFormatError(f"this is {what}", source)


def decode_text(data: bytes, source: str) -> tuple[str, list[str]]:
    """Text of a file that must be text; raises PatternFormatError for binary content.

    UTF-8 (with or without BOM) first; failing that Latin-1 (instrument software often
    writes a degree sign in Latin-1), which is noted."""
    notes: list[str] = []
    refuse_known_binary(data, source)
    if not data.strip():
        raise PatternFormatError("the file is empty", source)
    head = data[:65536]
    if b"\x00" in head:
        raise PatternFormatError("binary content (NUL bytes): not a text pattern file; export the data as "
                                 "text (.xy/.csv), .xrdml, GSAS or CIF", source)
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if control > 0.01 * len(head):
        raise PatternFormatError("binary content (control characters): not a text pattern file", source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        notes.append("file is not UTF-8; decoded as Latin-1")
    return text, notes
