"""Frozen-expert feature cache: computed once per (expert weights, preprocessing, layers,
tokens, data set content), reused by every trial and study that asks for the same thing.

Entries live in memory (bounded) and on disk. A disk entry is `MAGIC | sha256 | payload`, written
to a temporary file and renamed into place, so a crash or a concurrent writer never leaves a
half-written entry under the final name; an entry whose checksum fails is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trials.vlm.reduce import Features

log = logging.getLogger(__name__)
MAGIC = b"VLMSFC1\n"
VERSION = 1  # bump when what is cached changes meaning


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    corrupt: int = 0
    write_errors: int = 0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits


def cache_key(identity: str, image_size: int, layers: tuple[int, ...], tokens: int | None,
              data_fingerprint: str) -> str:
    """Everything the cached tensors depend on, hashed."""
    spec = {"v": VERSION, "expert": identity, "image_size": image_size, "layers": list(layers),
            "tokens": tokens, "data": data_fingerprint}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def _serialize(feats: list[Features]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"grids": [list(f.grid) for f in feats],
                "tokens": [f.tokens.contiguous() for f in feats]}, buffer)
    return buffer.getvalue()


def _deserialize(payload: bytes) -> list[Features]:
    data = torch.load(io.BytesIO(payload), weights_only=True)
    return [Features(t, (int(g[0]), int(g[1]))) for t, g in zip(data["tokens"], data["grids"], strict=True)]


class FeatureCache:
    """`get(key, compute)` returns cached features or computes, stores and returns them."""

    def __init__(self, root: str | Path | None = None, memory_bytes: int = 2 << 30) -> None:
        self.root = Path(root) if root is not None else None
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, list[Features]] = OrderedDict()
        self.stats = CacheStats()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._sweep_temporaries()

    def get(self, key: str, compute: Callable[[], list[Features]]) -> list[Features]:
        if key in self._memory:
            self.stats.memory_hits += 1
            self._memory.move_to_end(key)
            return self._memory[key]
        feats = self._read(key)
        if feats is not None:
            self.stats.disk_hits += 1
        else:
            self.stats.misses += 1
            feats = compute()
            self._write(key, feats)
        self._remember(key, feats)
        return feats

    def __contains__(self, key: str) -> bool:
        return key in self._memory or (self.root is not None and self._path(key).exists())

    def disk_bytes(self) -> int:
        if self.root is None:
            return 0
        return sum(p.stat().st_size for p in self.root.glob("*.feat"))

    # ---- internals -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.feat"

    def _remember(self, key: str, feats: list[Features]) -> None:
        self._memory[key] = feats
        while len(self._memory) > 1 and self._memory_used() > self.memory_bytes:
            self._memory.popitem(last=False)

    def _memory_used(self) -> int:
        return sum(f.tokens.numel() * f.tokens.element_size()
                   for feats in self._memory.values() for f in feats)

    def _read(self, key: str) -> list[Features] | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("feature cache: cannot read %s (%s); recomputing", path, exc)
            return None
        head, digest, payload = blob[:len(MAGIC)], blob[len(MAGIC):len(MAGIC) + 64], blob[len(MAGIC) + 64:]
        if head != MAGIC or hashlib.sha256(payload).hexdigest().encode() != digest:
            self.stats.corrupt += 1
            log.warning("feature cache: %s is corrupt (truncated or damaged); recomputing", path)
            path.unlink(missing_ok=True)
            return None
        return _deserialize(payload)

    def _write(self, key: str, feats: list[Features]) -> None:
        if self.root is None:
            return
        payload = _serialize(feats)
        blob = MAGIC + hashlib.sha256(payload).hexdigest().encode() + payload
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.{os.getpid()}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path(key))  # atomic: readers see the old state or the whole entry
        except OSError as exc:  # disk full, read-only: the trial goes on without caching
            self.stats.write_errors += 1
            log.warning("feature cache: cannot write %s (%s); continuing without it", key, exc)
            Path(tmp).unlink(missing_ok=True)

    def _sweep_temporaries(self) -> None:
        """Remove temporary files of writers that no longer run (killed mid-write)."""
        assert self.root is not None
        for tmp in self.root.glob(".*.tmp"):
            parts = tmp.name.split(".")
            pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
            if pid is None or not _alive(pid):
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
