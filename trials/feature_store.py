"""Feature cache entries on disk: one raw `.npy` array per tapped layer, (N, T, C) in the trial's
dtype, beside a JSON manifest; rows are read a batch at a time, so no split is ever whole in RAM.

An entry is a directory holding `layer<i>.npy` and `manifest.json` (format, rows, dtype, and per
layer its grid, shape, header offset, byte size and sha256). `EntryWriter` fills a scratch
directory batch by batch, hashing as it writes, fsyncs it and writes the manifest last; the cache
then renames the directory into place, so a reader sees no entry or a whole one. `open_entry`
checks each file's size and `.npy` header against the manifest every time, and its sha256
(streamed in chunks) once per process per file. numpy has no bfloat16: its bits are stored as
uint16 and viewed back with torch. Rows are read with `preadv`, not a memory map: pages of a
mapping count in the process's RSS while mapped, the page cache that file reads go through does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from trials.vlm.reduce import Features, Grid

FORMAT = "vlmsearch-features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HASH_CHUNK = 8 << 20      # bytes read at a time when verifying a checksum
SALVAGE_ROWS_BYTES = 32 << 20  # rows read back at a time from a write that failed

# torch dtype name -> (torch dtype, numpy dtype of the file); bf16 travels as its uint16 bits
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype("<f4")), "float16": (torch.float16, np.dtype("<f2")),
    "bfloat16": (torch.bfloat16, np.dtype("<u2")), "float64": (torch.float64, np.dtype("<f8")),
}
_VERIFIED: set[tuple[int, int, int, int]] = set()  # (dev, inode, size, mtime) whose sha256 matched


class CorruptEntry(ValueError):
    """An entry on disk that does not match its manifest (truncated, damaged, foreign)."""


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"cannot store features of dtype {name}; storable: {sorted(DTYPES)}")
    return name


def _file_id(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class DiskRows:
    """An (N, T, C) array in a file from `offset` on; `rows[idx]` reads just those rows -> Tensor.

    `idx` is what a tensor takes on its first dimension: an int, a slice, a list or a tensor of
    indices (or a bool mask). Runs of consecutive indices are read with one `preadv` each.
    """

    def __init__(self, path: Path, offset: int, shape: Sequence[int], dtype: str) -> None:
        self.path, self.offset, self.shape = Path(path), offset, torch.Size(shape)
        self.dtype, self._file_dtype = DTYPES[dtype]
        self._name = dtype
        self._row_items = int(np.prod(self.shape[1:]))
        self.row_bytes = self._row_items * self._file_dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __reduce__(self) -> tuple[Any, ...]:  # a copy in another process reopens the file
        return DiskRows, (self.path, self.offset, tuple(self.shape), self._name)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def close(self) -> None:
        self._closer()

    def __getitem__(self, idx: int | slice | Sequence[int] | Tensor) -> Tensor:
        positions, single = self._positions(idx)
        out = np.empty((len(positions), self._row_items), dtype=self._file_dtype)  # (k, T*C)
        if len(positions):
            buffer = memoryview(out.reshape(-1).view(np.uint8))
            breaks = np.flatnonzero(np.diff(positions) != 1) + 1
            for start, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(positions)], strict=True):
                self._read_into(buffer[start * self.row_bytes:stop * self.row_bytes],
                                self.offset + int(positions[start]) * self.row_bytes)
        tokens = torch.from_numpy(out)
        if self.dtype == torch.bfloat16:
            tokens = tokens.view(torch.int16).view(torch.bfloat16)
        tokens = tokens.reshape(len(positions), *self.shape[1:])  # (k, T, C)
        return tokens[0] if single else tokens

    def _positions(self, idx: int | slice | Sequence[int] | Tensor) -> tuple[np.ndarray, bool]:
        n = len(self)
        if isinstance(idx, slice):
            return np.arange(*idx.indices(n), dtype=np.int64), False
        if isinstance(idx, Tensor):
            if idx.dtype == torch.bool:
                idx = idx.nonzero().flatten()
            single, array = idx.dim() == 0, idx.detach().cpu().numpy().astype(np.int64).reshape(-1)
        else:
            single = isinstance(idx, int | np.integer)
            array = np.asarray(idx, dtype=np.int64).reshape(-1)
        array = np.where(array < 0, array + n, array)
        if ((array < 0) | (array >= n)).any():
            raise IndexError(f"index out of range for {n} rows")
        return array, single

    def _read_into(self, view: memoryview, offset: int) -> None:
        while len(view):
            got = os.preadv(self._fd, [view], offset)
            if got == 0:
                raise OSError(f"{self.path} ended early (truncated after it was opened)")
            view, offset = view[got:], offset + got


@dataclass(frozen=True)
class StoredLayer:
    """One layer of a disk entry: `tokens[idx]` gives (len(idx), T, C) on the CPU."""

    tokens: DiskRows
    grid: Grid

    def load(self) -> Features:
        return Features(self.tokens[:], self.grid)


def _raw(tokens: Tensor) -> np.ndarray:
    """A contiguous CPU view of `tokens` in its file dtype (bf16 as uint16 bits)."""
    t = tokens.detach().cpu().contiguous()
    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def _header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


class EntryWriter:
    """Writes an entry into `folder` (created; must not exist) batch by batch.

    `rows` is the split's size (None: the first batch is the whole split). Until `finish` the
    folder has no manifest, so nothing reads it; `durable` fsyncs files and folder first.
    """

    def __init__(self, folder: Path, rows: int | None, durable: bool = True) -> None:
        self.folder, self.rows, self.durable = folder, rows, durable
        self.done = 0
        self._files: list[BinaryIO] = []
        self._hashes: list[Any] = []
        self._layers: list[dict[str, Any]] = []
        self._dtype = ""
        folder.mkdir()

    def add(self, batch: Sequence[Features]) -> None:
        """Append one batch's rows to every layer file (`done` counts only whole batches)."""
        if not self._files and not self._layers:
            self._start(batch)
        n = int(batch[0].tokens.shape[0]) if batch else 0
        shapes = [(list(f.grid), list(f.tokens.shape[1:]), dtype_name(f.tokens.dtype)) for f in batch]
        if shapes != [(s["grid"], s["shape"][1:], self._dtype) for s in self._layers]:
            raise ValueError(f"a feature batch {shapes} differs from the first one's layers")
        if self.done + n > self._layers[0]["shape"][0]:
            raise ValueError(f"more than the {self._layers[0]['shape'][0]} rows declared")
        for f, handle, digest in zip(batch, self._files, self._hashes, strict=True):
            data = memoryview(_raw(f.tokens).reshape(-1).view(np.uint8))
            _write_all(handle, data)
            digest.update(data)
        self.done += n

    def _start(self, batch: Sequence[Features]) -> None:
        rows = self.rows if self.rows is not None else int(batch[0].tokens.shape[0])
        self._dtype = dtype_name(batch[0].tokens.dtype) if batch else "float32"
        file_dtype = DTYPES[self._dtype][1]
        for i, f in enumerate(batch):
            shape = (rows, *(int(s) for s in f.tokens.shape[1:]))
            header = _header(shape, file_dtype)
            handle = open(self.folder / f"layer{i}.npy", "xb", buffering=0)  # noqa: SIM115 - closed later
            self._files.append(handle)
            _write_all(handle, memoryview(header))
            self._hashes.append(hashlib.sha256(header))
            self._layers.append({"file": f"layer{i}.npy", "grid": list(f.grid), "shape": list(shape),
                                 "offset": len(header),
                                 "bytes": len(header) + int(np.prod(shape)) * file_dtype.itemsize})

    def finish(self) -> None:
        """Flush (and fsync) every file, then write the manifest: the entry is complete."""
        declared = self._layers[0]["shape"][0] if self._layers else (self.rows or 0)
        if self.done != declared:
            raise ValueError(f"the batches gave {self.done} rows, not the {declared} declared")
        for handle, layer, digest in zip(self._files, self._layers, self._hashes, strict=True):
            if self.durable:
                os.fsync(handle.fileno())
            handle.close()
            layer["sha256"] = digest.hexdigest()
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "rows": declared, "dtype": self._dtype,
                    "layers": self._layers}
        with open(self.folder / MANIFEST, "x", encoding="utf-8") as handle:
            json.dump(manifest, handle)
            handle.flush()
            if self.durable:
                os.fsync(handle.fileno())
        if self.durable:
            sync_folder(self.folder)
        for layer in self._layers:  # just hashed while written: no need to read it back
            _VERIFIED.add(_file_id(self.folder / layer["file"]))

    def salvage(self) -> Iterator[list[Features]]:
        """The rows written so far as batches, read back (files opened now, so `discard` may
        follow at once): what a fallback writes elsewhere after this one failed. Writes are
        unbuffered, so every row before `done` reached the file; only the failed batch did not."""
        if not self.done:
            return iter(())
        stored = [StoredLayer(DiskRows(self.folder / s["file"], s["offset"], [self.done, *s["shape"][1:]],
                                       self._dtype), (s["grid"][0], s["grid"][1])) for s in self._layers]
        return _read_back(stored)

    def discard(self) -> None:
        """Close and delete everything written (errors ignored: a sweep removes leftovers)."""
        for handle in self._files:
            with contextlib.suppress(OSError):
                handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_all(handle: BinaryIO, data: memoryview) -> None:
    """Write every byte (an unbuffered write may take only part)."""
    while len(data):
        wrote = handle.write(data)
        if not wrote:
            raise OSError(f"writing {getattr(handle, 'name', 'a feature file')} made no progress")
        data = data[wrote:]


def _read_back(stored: list[StoredLayer]) -> Iterator[list[Features]]:
    rows = len(stored[0].tokens)
    step = max(1, SALVAGE_ROWS_BYTES // max(1, sum(s.tokens.row_bytes for s in stored)))
    try:
        for start in range(0, rows, step):
            yield [Features(s.tokens[start:start + step], s.grid) for s in stored]
    finally:
        for s in stored:
            s.tokens.close()


def sync_folder(folder: Path) -> None:
    """fsync a directory, so the names in it survive a crash (best effort where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def open_entry(folder: Path) -> list[StoredLayer]:
    """The entry in `folder`, checked against its manifest.

    Raises FileNotFoundError when there is no entry, CorruptEntry when it is damaged, another
    OSError when it cannot be read now.
    """
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CorruptEntry(f"{folder} has no {MANIFEST}") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptEntry(f"{folder / MANIFEST} is not valid JSON ({err})") from err
    try:
        if (manifest["format"], manifest["version"]) != (FORMAT, FORMAT_VERSION):
            raise CorruptEntry(f"{folder} is format {manifest['format']} v{manifest['version']}")
        return [_open_layer(folder, layer, int(manifest["rows"]), manifest["dtype"])
                for layer in manifest["layers"]]
    except (KeyError, TypeError, IndexError) as err:
        raise CorruptEntry(f"{folder / MANIFEST} lacks or misspells {err}") from err


def _open_layer(folder: Path, layer: dict[str, Any], rows: int, dtype: str) -> StoredLayer:
    path = folder / Path(layer["file"]).name
    shape, offset = tuple(int(s) for s in layer["shape"]), int(layer["offset"])
    if dtype not in DTYPES or shape[0] != rows or len(shape) != 3:
        raise CorruptEntry(f"{path}: manifest shape {shape} / dtype {dtype} is not an entry's")
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise CorruptEntry(f"{path} is missing") from err
    expected = offset + int(np.prod(shape)) * DTYPES[dtype][1].itemsize
    if size != layer["bytes"] or size != expected:
        raise CorruptEntry(f"{path} has {size} bytes, not {expected} (truncated or damaged)")
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            header = read(handle)
        except ValueError as err:
            raise CorruptEntry(f"{path} has no valid .npy header ({err})") from err
        if header != (shape, False, DTYPES[dtype][1]) or handle.tell() != offset:
            raise CorruptEntry(f"{path}: its .npy header {header} disagrees with the manifest")
    if _file_id(path) not in _VERIFIED:
        if _sha256(path) != layer["sha256"]:
            raise CorruptEntry(f"{path} fails its checksum (damaged)")
        _VERIFIED.add(_file_id(path))
    return StoredLayer(DiskRows(path, offset, shape, dtype), (int(layer["grid"][0]), int(layer["grid"][1])))


def _sha256(path: Path) -> str:
    """The file's sha256, read in HASH_CHUNK pieces into one reused buffer (flat memory)."""
    digest, buffer = hashlib.sha256(), bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(view):
            digest.update(view[:got])
    return digest.hexdigest()


def entry_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
