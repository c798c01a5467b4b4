"""Frozen-expert feature cache: computed once per (expert weights, preprocessing, layers,
tokens, data set content, dtype), reused by every trial and study that asks for the same thing.

An entry lives on disk as `<root>/<key>.features/` (see `trials.feature_store`: one `.npy` per
layer in the trial's dtype, and a manifest), written batch by batch while the expert runs into a
scratch directory that is renamed into place: a crash or a full disk never leaves a readable
partial entry, and a damaged one is deleted and recomputed. `get` returns the layers of every
sample, whose `tokens[idx]` reads only the rows asked for; entries up to a quarter of the memory
budget are held in RAM (an LRU bounded by `memory_bytes`), larger ones never are. With no root, or
when the root cannot be written, entries go to a private spill directory removed with the cache;
in memory only when no disk takes them. Entries of the first format (`<key>.feat` blobs, keys of
VERSION 1) are never looked up: VERSION 2 keys are new, so they are recomputed, not misread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch

from trials.feature_store import (
    MANIFEST,
    CorruptEntry,
    EntryWriter,
    StoredLayer,
    entry_bytes,
    open_entry,
    sync_folder,
)
from trials.vlm.reduce import Features

log = logging.getLogger(__name__)
VERSION = 2  # bump when what is cached changes meaning (2: the per-layer .npy entry format)
SUFFIX = ".features"
SPILL_PREFIX = "vlmsearch-spill-"
MAX_ENTRIES = 64  # handles of disk entries kept for memory hits (they hold open files, no rows)

Layer = Features | StoredLayer  # `.tokens[idx]` -> (len(idx), T, C) tensor, `.grid`
Layers = Sequence[Layer]
Batches = Callable[[], Iterable[list[Features]]]  # a fresh pass over the split, batch by batch


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


def cache_key(identity: str, image_size: int, layers: tuple[int | str, ...], tokens: int | None,
              data_fingerprint: str, dtype: str = "float32", merge_grid: str = "smallest",
              reduce: str = "pool", tiling: str | None = None) -> str:
    """Everything the cached tensors depend on, hashed (the dtype only when not fp32, the merge
    grid only when not the smallest, the reduction only when it is read and not pooling, the
    tile layout (`TileLayout.key`) only when the expert tiles: older keys stand)."""
    spec = {"v": VERSION, "expert": identity, "image_size": image_size, "layers": list(layers),
            "tokens": tokens, "data": data_fingerprint}
    if dtype != "float32":
        spec["dtype"] = dtype
    if merge_grid != "smallest":
        spec["merge_grid"] = merge_grid
    if tokens is not None and reduce != "pool":
        spec["reduce"] = reduce
    if tiling is not None:
        spec["tiling"] = tiling
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def held_bytes(layers: Layers) -> int:
    """Bytes of `layers` held in RAM (a disk entry's rows are not)."""
    return sum(f.tokens.nbytes for f in layers if isinstance(f, Features))


def stored_bytes(layers: Layers) -> int:
    return sum(f.tokens.nbytes for f in layers)


class FeatureCache:
    """`get(key, compute)` / `get_batches(key, batches, rows)` return cached features or compute,
    store and return them."""

    def __init__(self, root: str | Path | None = None, memory_bytes: int = 256 << 20) -> None:
        self.root = Path(root) if root is not None else None
        self.memory_bytes = memory_bytes
        self.hold_bytes = memory_bytes // 4  # entries up to this size are read into RAM
        self._memory: OrderedDict[str, Layers] = OrderedDict()
        self._spill: Path | None = None
        self.stats = CacheStats()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            _sweep(self.root)

    def get(self, key: str, compute: Callable[[], list[Features]]) -> Layers:
        """`compute` gives every sample's layers at once (small splits, tests)."""
        return self.get_batches(key, lambda: [compute()], rows=None)

    def get_batches(self, key: str, batches: Batches, rows: int | None) -> Layers:
        """`batches()` gives the split's `rows` samples in order, a list of layers per batch;
        they are written as they come, so the split is never whole in memory."""
        if key in self._memory:
            self.stats.memory_hits += 1
            self._memory.move_to_end(key)
            return self._memory[key]
        found = self._read(key)
        if found is not None:
            self.stats.disk_hits += 1
        else:
            self.stats.misses += 1
            found = self._compute(key, batches, rows)
        found = self._hold(found)
        self._remember(key, found)
        return found

    def __contains__(self, key: str) -> bool:
        return key in self._memory or (self.root is not None and (self._path(key) / MANIFEST).exists())

    def disk_bytes(self) -> int:
        if self.root is None:
            return 0
        return sum(entry_bytes(p) for p in self.root.glob(f"*{SUFFIX}") if p.is_dir())

    # ---- internals -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}{SUFFIX}"

    def _read(self, key: str) -> list[StoredLayer] | None:
        if self.root is None:
            return None
        folder = self._path(key)
        try:
            return open_entry(folder)
        except FileNotFoundError:
            return None
        except CorruptEntry as exc:
            self.stats.corrupt += 1
            log.warning("feature cache: %s; deleting it and recomputing", exc)
            _remove(folder)
        except OSError as exc:
            log.warning("feature cache: cannot read %s (%s); recomputing", folder, exc)
        return None

    def _compute(self, key: str, batches: Batches, rows: int | None) -> Layers:
        """Write the batches to the first place that takes them: the root, the spill directory,
        else memory. A place that fails hands on the rows it had (read back) and the rest."""
        pending: Iterator[list[Features]] = iter(batches())
        for folder, durable in self._places(key):
            try:
                writer = EntryWriter(_scratch(folder, key), rows, durable)
            except OSError as exc:
                self._lost(folder, exc)
                continue
            batch: list[Features] | None = None
            computing = False  # an error of the computation itself is no write error
            try:
                while True:
                    computing = True
                    batch = next(pending, None)
                    computing = False
                    if batch is None:
                        break
                    writer.add(batch)
                writer.finish()
                entry = self._publish(writer, folder)
            except OSError as exc:
                if computing:
                    writer.discard()
                    raise
                self._lost(folder, exc)
                pending = chain(writer.salvage(), [] if batch is None else [batch], pending)
                writer.discard()
                continue
            except BaseException:
                writer.discard()
                raise
            return open_entry(entry)  # published whole: an error now is no write error
        return _concatenate(list(pending))

    def _places(self, key: str) -> Iterator[tuple[Path, bool]]:
        if self.root is not None:
            yield self._path(key), True
        spill = self._spill_folder()
        if spill is not None:
            yield spill / f"{key}{SUFFIX}", False

    def _publish(self, writer: EntryWriter, folder: Path) -> Path:
        """Rename the finished scratch directory into place (atomic): `folder`. When another
        writer got there first, theirs is used (once it passes the usual checks) and ours dropped."""
        try:
            os.replace(writer.folder, folder)
        except OSError:
            if not folder.is_dir():
                raise
            try:
                open_entry(folder)
            except (OSError, CorruptEntry) as exc:
                raise OSError(f"{folder} exists and cannot be read ({exc})") from exc
            writer.discard()
            return folder
        if writer.durable:
            sync_folder(folder.parent)
        return folder

    def _lost(self, folder: Path, exc: OSError) -> None:
        if self.root is not None and folder.parent == self.root:
            self.stats.write_errors += 1
            log.warning("feature cache: cannot write %s (%s); continuing without it", folder, exc)
        else:
            log.warning("feature cache: cannot spill %s to disk (%s); keeping it in memory", folder, exc)

    def _spill_folder(self) -> Path | None:
        """This cache's private directory for entries no root holds (made on first use)."""
        if self._spill is None:
            try:
                _sweep_spills()
                self._spill = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-"))
            except OSError as exc:
                log.warning("feature cache: no spill directory (%s)", exc)
                return None
            weakref.finalize(self, shutil.rmtree, self._spill, True)
        return self._spill

    def _spilled(self, layers: Layers) -> Path | None:
        if self._spill is None or not layers or not isinstance(layers[0], StoredLayer):
            return None
        folder = layers[0].tokens.path.parent
        return folder if folder.parent == self._spill else None

    def _hold(self, layers: Layers) -> Layers:
        """A small disk entry read into RAM (a spilled one then deleted); others as they are."""
        if not layers or not isinstance(layers[0], StoredLayer) or stored_bytes(layers) > self.hold_bytes:
            return layers
        held = [f.load() if isinstance(f, StoredLayer) else f for f in layers]
        spilled = self._spilled(layers)
        for f in layers:
            if isinstance(f, StoredLayer):
                f.tokens.close()
        if spilled is not None:
            shutil.rmtree(spilled, ignore_errors=True)
        return held

    def _remember(self, key: str, layers: Layers) -> None:
        self._memory[key] = layers
        while len(self._memory) > 1 and (self._memory_used() > self.memory_bytes
                                         or len(self._memory) > MAX_ENTRIES):
            _, old = self._memory.popitem(last=False)
            spilled = self._spilled(old)
            if spilled is not None:  # only this cache could find it; open handles still read it
                shutil.rmtree(spilled, ignore_errors=True)

    def _memory_used(self) -> int:
        return sum(held_bytes(layers) for layers in self._memory.values())


def _concatenate(batches: list[list[Features]]) -> list[Features]:
    """The batches joined in memory: the last resort when no disk takes an entry."""
    if not batches:
        return []
    return [Features(torch.cat([b[j].tokens for b in batches]), batches[0][j].grid)
            for j in range(len(batches[0]))]


def _scratch(folder: Path, key: str) -> Path:
    """Where `folder` is written before its rename: `.<key>.<pid>.<random>.tmp` beside it."""
    return folder.parent / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _remove(folder: Path) -> None:
    """Delete an entry: first renamed to a scratch name, so a writer publishing a fresh entry
    under its name meanwhile never loses it to this delete."""
    doomed = _scratch(folder, folder.name.removesuffix(SUFFIX))
    try:
        os.replace(folder, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _sweep(root: Path) -> None:
    """Remove scratch entries of writers that no longer run (killed mid-write)."""
    for tmp in root.glob(".*.tmp"):
        parts = tmp.name[1:].rsplit(".", 3)
        pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
        if pid is None or not _alive(pid):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _sweep_spills() -> None:
    """Remove spill directories of processes that died without removing theirs."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}*-*"):
        pid = folder.name.removeprefix(SPILL_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
