"""Hostile images in a folder source: each is skipped, counted and named; none stalls the line."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from helio_gui.vision.sources import CaptureThread, SourceConfig, SourceError, image_size, iter_frames
from helio_gui.vision.types import SourceState


def _png_bomb(path: Path, side: int = 30000) -> None:
    """A ~100 kB 1-bit PNG that decodes to side x side pixels (2.7 GB as BGR for 30000)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    row = b"\0" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = comp.compress(row * side) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_is_skipped_before_decoding(tmp_path):
    """Decoding this took 60 s and 5.5 GB of memory before the header check."""
    folder = tmp_path / "parts"
    folder.mkdir()
    _png_bomb(folder / "a_bomb.png")
    good = np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8)
    cv2.imwrite(str(folder / "b_good.png"), good)
    t0 = time.monotonic()
    frames = list(iter_frames(f"folder:{folder}"))
    took = time.monotonic() - t0
    assert took < 3.0, f"reading the folder took {took:.1f} s"
    assert [f.source_name for f in frames] == ["b_good.png"]
    assert np.array_equal(frames[0].image, good)


def test_skip_reason_names_the_size_and_the_option(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    img = np.zeros((300, 400, 3), np.uint8)
    cv2.imwrite(str(folder / "big.jpg"), img)
    cv2.imwrite(str(folder / "ok.jpg"), img[:100, :100])
    cap = CaptureThread(f"folder:{folder}?rate=50&max_pixels=50000")
    cap.start()
    try:
        deadline = time.monotonic() + 10
        while cap.state != SourceState.ENDED and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = cap.stats()
    finally:
        cap.stop()
    assert stats["frames_captured"] == 1, stats
    reason = stats["skipped_files"]["big.jpg"]
    assert "400x300" in reason and "max_pixels" in reason, reason
    with pytest.raises(SourceError, match="max_pixels"):
        SourceConfig.parse(f"folder:{folder}?max_pixels=-1")


@pytest.mark.parametrize("ext,params", [("png", []), ("jpg", []), ("bmp", []), ("tif", []),
                                        ("webp", []), ("webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                                        ("ppm", [])])
def test_header_sizes_match_the_decoder(tmp_path, ext, params):
    img = np.random.default_rng(2).integers(0, 255, (123, 457, 3), np.uint8)
    path = tmp_path / f"x.{ext}"
    assert cv2.imwrite(str(path), img, params)
    assert image_size(path) == (457, 123)


def test_unknown_headers_leave_the_decision_to_the_decoder(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    for name in ("zero.png", "text.png", "cut.jpg"):
        assert image_size(tmp_path / name) is None
