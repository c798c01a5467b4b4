"""A data set's images: an in-memory uint8 tensor (generated sets), or `ImageFiles`, which keeps
file paths (or encoded image bytes) and decodes on demand, so a split read from disk is never whole
in RAM.

Both answer what a trial asks of images: `len`, `.shape` (N, 3, S, S), `.dtype`, indexing with
an int, a slice, a list or a tensor of indices (-> decoded uint8 tensor) and iteration. The
functions below add what differs: `batches` (in order; files decoded by DataLoader workers),
`update_digest` (a content hash) and `take` (a subset, lazy for files).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

DECODE_WORKERS = 4        # DataLoader worker processes decoding files for a pass over a split
HASH_CHUNK = 1 << 20      # bytes of an image file read at a time when hashing it
DIGEST_ROWS = 256         # tensor images hashed this many at a time (no full copy)
_FILE_DIGESTS: dict[tuple[str, int, int, int], bytes] = {}  # (path, inode, size, mtime) -> sha256

Index = int | slice | Sequence[int] | Tensor
Source = Path | bytes | None  # an image file, an encoded image's bytes (a TSV's base64), or none


RGB8 = tuple[int, int, int]


def decode(file: Source, size: int, pad: RGB8 | None = None) -> np.ndarray:
    """One image file (or encoded image bytes), RGB, bilinearly resized to size x size: uint8
    (size, size, 3). `pad`: first made square by centring it on a canvas of that colour (LLaVA's
    expand2square). No file (a text-only record): a black image."""
    from PIL import Image

    if file is None:
        return np.zeros((size, size, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as image:
        rgb = image.convert("RGB")
        if pad is not None:
            rgb = expand2square(rgb, pad)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def expand2square(image: Any, colour: RGB8) -> Any:
    """The PIL image centred on a square canvas of `colour` (LLaVA's `expand2square`)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _to_tensor(hwc: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))  # (3, S, S)


class _Decoded(Dataset):
    """File i decoded to uint8 (3, S, S): what DataLoader workers run."""

    def __init__(self, files: Sequence[Source], size: int, pad: RGB8 | None) -> None:
        self.files, self.size, self.pad = list(files), size, pad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        return _to_tensor(decode(self.files[i], self.size, self.pad))


class ImageFiles:
    """N images read from files (one per sample; files may repeat; None: a text-only record's
    blank image) or from encoded image bytes (kept encoded: a TSV's base64 images), decoded on
    demand to uint8 (3, size, size), padded square first with `pad`'s colour when given; no pixels
    are kept, so memory holds at most the batch asked for."""

    dtype = torch.uint8

    def __init__(self, files: Sequence[Path | str | bytes | None], size: int, pad: RGB8 | None = None
                 ) -> None:
        self.files: tuple[Source, ...] = tuple(_source(f) for f in files)
        self.size, self.pad = size, pad

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), 3, self.size, self.size))

    def dim(self) -> int:
        return 4

    def __repr__(self) -> str:
        return f"ImageFiles({len(self.files)} files, {self.size} px)"

    def _positions(self, idx: Index) -> tuple[list[int], bool]:
        if isinstance(idx, slice):
            return list(range(*idx.indices(len(self)))), False
        if isinstance(idx, Tensor):
            if idx.dtype == torch.bool:
                idx = idx.nonzero().flatten()
            return [int(i) for i in idx.reshape(-1).tolist()], idx.dim() == 0
        if isinstance(idx, int | np.integer):
            return [int(idx)], True
        return [int(i) for i in idx], False

    def __getitem__(self, idx: Index) -> Tensor:
        """The images at `idx`, decoded now: (3, S, S) for an int, else (k, 3, S, S)."""
        positions, single = self._positions(idx)
        decoded = [_to_tensor(decode(self.files[i], self.size, self.pad)) for i in positions]
        if single:
            return decoded[0]
        if not decoded:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.stack(decoded)

    def __iter__(self) -> Iterator[Tensor]:
        for file in self.files:
            yield _to_tensor(decode(file, self.size, self.pad))

    def subset(self, idx: Index) -> ImageFiles:
        positions, _ = self._positions(idx)
        return ImageFiles([self.files[i] for i in positions], self.size, self.pad)

    def batches(self, size: int) -> Iterator[Tensor]:
        """Consecutive (<= size, 3, S, S) batches, decoded ahead by DataLoader workers (none for
        a split of one batch, or inside a daemonic process, which may not start children)."""
        workers = min(DECODE_WORKERS, max(0, (os.cpu_count() or 1) - 1))
        if len(self) <= size or multiprocessing.current_process().daemon:
            workers = 0
        loader: DataLoader[Any] = DataLoader(_Decoded(self.files, self.size, self.pad), batch_size=size,
                                             num_workers=workers, shuffle=False)
        yield from loader

    def update_digest(self, digest: Any) -> None:
        """Hash the decode size (and pad colour) and each file's bytes (streamed; memoised per file
        version; a missing file as `none`); encoded bytes as the sha256 of those bytes. An entry
        object that repeats (a file asked about several times, a shared image) is hashed once."""
        padding = "" if self.pad is None else f"+pad{self.pad}"
        digest.update(f"files@{self.size}{padding}\0".encode())
        hashed: dict[int, bytes] = {}   # id of an entry -> its sha256
        for file in self.files:
            if file is None:
                digest.update(b"none\0")
                continue
            if id(file) not in hashed:
                encoded = isinstance(file, bytes)
                hashed[id(file)] = hashlib.sha256(file).digest() if encoded else file_digest(file)
            digest.update(hashed[id(file)])


def _source(file: Path | str | bytes | None) -> Source:
    """A path as a Path (a Path kept: files repeat); encoded bytes and None as they are."""
    return Path(file) if isinstance(file, str) else file


def file_digest(file: Path) -> bytes:
    """sha256 of the file's bytes, read HASH_CHUNK at a time; once per process per file version."""
    st = file.stat()
    key = (str(file.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        hashed = hashlib.sha256()
        with open(file, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                hashed.update(chunk)
        _FILE_DIGESTS[key] = hashed.digest()
    return _FILE_DIGESTS[key]


Images = Tensor | ImageFiles


def batches(images: Images, size: int) -> Iterator[Tensor]:
    """The images in order, (<= size, 3, H, W) uint8 at a time."""
    if isinstance(images, ImageFiles):
        yield from images.batches(size)
        return
    for start in range(0, len(images), size):
        yield images[start:start + size]


def update_digest(images: Images, digest: Any) -> None:
    """Feed the images' content to `digest` (a tensor's bytes, in row chunks: the same hash as
    its whole `tobytes()`, without the copy)."""
    if isinstance(images, ImageFiles):
        images.update_digest(digest)
        return
    flat = images.contiguous()
    for start in range(0, len(flat), DIGEST_ROWS):
        digest.update(memoryview(flat[start:start + DIGEST_ROWS].numpy()).cast("B"))


def take(images: Images, idx: Sequence[int]) -> Images:
    """The images at `idx`, of the same kind (files stay files)."""
    return images.subset(idx) if isinstance(images, ImageFiles) else images[list(idx)]
