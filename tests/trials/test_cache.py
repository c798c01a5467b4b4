"""The feature cache: hits, atomic writes, corrupt and half-written entries never used, and the
disk store under it (per-layer .npy files read a batch of rows at a time, fp32 and bf16)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from trials import feature_store
from trials.cache import FeatureCache, Layers, cache_key
from trials.feature_store import StoredLayer
from trials.vlm.reduce import Features


def feats(seed: int = 0, n: int = 64) -> list[Features]:
    g = torch.Generator().manual_seed(seed)
    return [Features(torch.randn(n, 16, 8, generator=g), (4, 4)),
            Features(torch.randn(n, 16, 4, generator=g), (4, 4))]


def equal(a: Layers, b: Layers) -> bool:
    """Same layers, whether held in memory (Features) or read from disk (StoredLayer)."""
    return all(torch.equal(x.tokens[:], y.tokens[:]) and x.grid == y.grid for x, y in zip(a, b, strict=True))


def test_key_covers_everything_the_features_depend_on() -> None:
    base = cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1")
    assert base == cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1")
    for changed in [cache_key("preset:tiny-clip@2", 96, (-1,), 16, "data1"),
                    cache_key("preset:tiny-clip@1", 128, (-1,), 16, "data1"),
                    cache_key("preset:tiny-clip@1", 96, (-2,), 16, "data1"),
                    cache_key("preset:tiny-clip@1", 96, (-1,), 64, "data1"),
                    cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data2"),
                    cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1", merge_grid="largest")]:
        assert changed != base
    assert base == cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1", merge_grid="smallest")


def test_memory_then_disk_hits(tmp_path: Path) -> None:
    calls = []
    cache = FeatureCache(tmp_path)
    first = cache.get("k", lambda: calls.append(1) or feats())
    again = cache.get("k", lambda: calls.append(1) or feats(1))
    assert calls == [1] and again is first and cache.stats.memory_hits == 1
    fresh = FeatureCache(tmp_path)  # a new process: only the disk remains
    loaded = fresh.get("k", lambda: calls.append(1) or feats(1))
    assert calls == [1] and fresh.stats.disk_hits == 1 and equal(loaded, first)
    assert fresh.disk_bytes() > 0 and "k" in fresh


def test_truncated_entry_is_detected_and_recomputed(tmp_path: Path) -> None:
    FeatureCache(tmp_path).get("k", feats)
    path = tmp_path / "k.features" / "layer0.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cache = FeatureCache(tmp_path)
    got = cache.get("k", lambda: feats(0))
    assert cache.stats.corrupt == 1 and cache.stats.misses == 1 and equal(got, feats(0))
    assert equal(FeatureCache(tmp_path).get("k", lambda: feats(5)), feats(0)), "rewritten whole"


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    FeatureCache(tmp_path).get("k", feats)
    path = tmp_path / "k.features" / "layer1.npy"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))  # same size: only the checksum can tell
    feature_store._VERIFIED.clear()  # as in a new process (this one wrote, so trusted, the file)
    cache = FeatureCache(tmp_path)
    assert equal(cache.get("k", lambda: feats(0)), feats(0)) and cache.stats.corrupt == 1


WRITER = """
import os, sys, time
sys.path.insert(0, {root!r})
import torch
from trials import cache as c
from trials.vlm.reduce import Features

def stall(src, dst):          # the writer is killed after its data is written, before the rename
    open({flag!r}, "w").close()
    time.sleep(60)

os.replace = stall
store = c.FeatureCache({dir!r})
store.get("big", lambda: [Features(torch.randn(256, 64, 32), (8, 8))])
"""


def writer_at_its_flag(template: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A writer process (`template` formatted with root, flag, dir) once it has touched its
    flag file, i.e. while it is writing."""
    flag = tmp_path / "writing"
    code = template.format(root=str(Path(__file__).resolve().parents[2]), flag=str(flag),
                           dir=str(tmp_path / "cache"))
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not flag.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert flag.exists(), "the writer never reached its write"
    return child


def test_killed_writer_leaves_no_entry_that_is_read(tmp_path: Path) -> None:
    child = writer_at_its_flag(WRITER, tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    leftovers = list((tmp_path / "cache").glob(".*.tmp"))
    assert leftovers, "the killed writer left its temporary file"
    cache = FeatureCache(tmp_path / "cache")  # opening sweeps dead writers' temporaries
    assert "big" not in cache
    assert list((tmp_path / "cache").glob(".*.tmp")) == []
    computed = cache.get("big", lambda: feats(3))
    assert cache.stats.misses == 1 and equal(computed, feats(3))


def test_unwritable_disk_does_not_fail_the_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureCache(tmp_path)

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    got = cache.get("k", feats)
    assert equal(got, feats()) and cache.stats.write_errors == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> object:
    """A real 128 KiB file system (tmpfs), so writes fail with ENOSPC as on a full disk."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); "
                    "test_unwritable_disk_does_not_fail_the_trial covers the error path")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True)


def test_a_full_disk_fails_no_trial_and_leaves_no_entry(tiny_disk: Path) -> None:
    big = feats(1, n=256)  # ~200 KiB: more than the disk holds
    first = FeatureCache(tiny_disk)
    assert equal(first.get("big", lambda: big), big) and first.stats.write_errors == 1
    assert [p for p in tiny_disk.rglob("*") if p.is_file()] == [], "no partial file left behind"
    small = feats(2, n=8)
    assert equal(first.get("small", lambda: small), small) and first.stats.write_errors == 1
    fresh = FeatureCache(tiny_disk)  # a later process: the small entry is read, the big recomputed
    assert equal(fresh.get("small", lambda: pytest.fail("recomputed")), small)
    calls: list[int] = []
    assert equal(fresh.get("big", lambda: calls.append(1) or big), big) and calls == [1]


# ---- the disk store: large entries stay on disk and are read a batch of rows at a time ----------


def split(seed: int = 0, n: int = 300, dtype: torch.dtype = torch.float32) -> list[Features]:
    """A split's two layers with different grids and widths."""
    g = torch.Generator().manual_seed(seed)
    return [Features(torch.randn(n, 16, 8, generator=g).to(dtype), (4, 4)),
            Features(torch.randn(n, 4, 24, generator=g).to(dtype), (2, 2))]


def in_batches(layers: list[Features], size: int, calls: list[int] | None = None
               ) -> Callable[[], Iterator[list[Features]]]:
    """What `get_batches` takes: a fresh pass over `layers`, `size` rows at a time."""
    def passes() -> Iterator[list[Features]]:
        if calls is not None:
            calls.append(1)
        n = len(layers[0].tokens)
        for start in range(0, n, size):
            yield [Features(f.tokens[start:start + size], f.grid) for f in layers]
    return passes


def on_disk(root: Path | None) -> FeatureCache:
    """A cache that holds nothing in RAM: every entry is read from disk rows."""
    return FeatureCache(root, memory_bytes=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_round_trip_in_the_trials_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    want = split(dtype=dtype)
    got = on_disk(tmp_path).get_batches("k", in_batches(want, 64), rows=300)
    assert all(isinstance(f, StoredLayer) for f in got)
    again = on_disk(tmp_path).get_batches("k", lambda: pytest.fail("recomputed"), rows=300)
    for layers in (got, again):
        assert [f.tokens[:].dtype for f in layers] == [dtype, dtype] and equal(layers, want)
    manifest = json.loads((tmp_path / "k.features" / "manifest.json").read_text())
    assert manifest["dtype"] == str(dtype).removeprefix("torch.") and manifest["rows"] == 300
    size = 2 if dtype == torch.bfloat16 else 4
    assert (tmp_path / "k.features" / "layer0.npy").stat().st_size == 128 + 300 * 16 * 8 * size
    raw = np.load(tmp_path / "k.features" / "layer1.npy", mmap_mode="r")  # plain .npy files
    assert raw.shape == (300, 4, 24) and raw.dtype == (np.uint16 if dtype == torch.bfloat16 else np.float32)


def test_any_rows_read_equal_the_tensor(tmp_path: Path) -> None:
    want = split()
    rows = on_disk(tmp_path).get("k", lambda: want)[0].tokens
    ref = want[0].tokens
    g = torch.Generator().manual_seed(1)
    picks: list[object] = [torch.randint(0, 300, (37,), generator=g), torch.randperm(300, generator=g)[:50],
                           [5, 4, 3, 3, 299, 0], [-1, -300], torch.tensor([7, 8, 9, 10]), [],
                           slice(10, 250, 7), slice(None), slice(-5, None), ref[:, 0, 0] > 0]
    for idx in picks:
        assert torch.equal(rows[idx], ref[idx]), idx  # type: ignore[index]
    assert torch.equal(rows[17], ref[17]) and torch.equal(rows[torch.tensor(3)], ref[3])
    with pytest.raises(IndexError):
        rows[[300]]


def test_batches_are_written_as_they_come_and_hits_are_counted(tmp_path: Path) -> None:
    want, calls = split(), []
    cache = on_disk(tmp_path)
    first = cache.get_batches("k", in_batches(want, 64, calls), rows=300)
    assert cache.get_batches("k", in_batches(want, 64, calls), rows=300) is first
    assert (cache.stats.misses, cache.stats.memory_hits, cache.stats.disk_hits, calls) == (1, 1, 0, [1])
    fresh = FeatureCache(tmp_path)  # a new process; the entry is small for its budget: read into RAM
    held = fresh.get_batches("k", in_batches(want, 64, calls), rows=300)
    assert all(isinstance(f, Features) for f in held) and equal(held, want)
    assert (fresh.stats.disk_hits, fresh.stats.misses, calls) == (1, 0, [1])
    assert fresh.disk_bytes() == sum(p.stat().st_size for p in (tmp_path / "k.features").iterdir())


def test_a_split_that_gives_other_rows_than_declared_stores_nothing(tmp_path: Path) -> None:
    cache = on_disk(tmp_path)
    with pytest.raises(ValueError, match="not the 301 declared"):
        cache.get_batches("k", in_batches(split(), 64), rows=301)
    assert list(tmp_path.iterdir()) == [] and "k" not in cache


def test_an_error_of_the_computation_propagates_and_leaves_nothing(tmp_path: Path) -> None:
    def broken() -> Iterator[list[Features]]:
        yield split()[:1]
        raise OSError("an image file went away")

    cache = on_disk(tmp_path)
    with pytest.raises(OSError, match="went away"):
        cache.get_batches("k", broken, rows=600)
    assert list(tmp_path.iterdir()) == [] and cache.stats.write_errors == 0


@pytest.mark.parametrize("damage", ["truncate", "extend", "flip", "no manifest", "bad manifest",
                                    "header", "missing layer"])
def test_a_damaged_data_file_is_never_read(tmp_path: Path, damage: str) -> None:
    on_disk(tmp_path).get_batches("k", in_batches(split(), 64), rows=300)
    folder = tmp_path / "k.features"
    layer = folder / "layer1.npy"
    blob = bytearray(layer.read_bytes())
    if damage == "truncate":
        layer.write_bytes(blob[:-1])
    elif damage == "extend":
        layer.write_bytes(blob + b"\0" * 8)
    elif damage == "flip":
        blob[200] ^= 0x01
        layer.write_bytes(blob)
    elif damage == "no manifest":
        (folder / "manifest.json").unlink()
    elif damage == "bad manifest":
        (folder / "manifest.json").write_text("{")
    elif damage == "header":
        layer.write_bytes(blob.replace(b"(300, 4, 24)", b"(300, 24, 4)"))
    else:
        layer.unlink()
    feature_store._VERIFIED.clear()  # as in a new process
    cache, calls = on_disk(tmp_path), []
    got = cache.get_batches("k", in_batches(split(), 64, calls), rows=300)
    assert (cache.stats.corrupt, cache.stats.misses, calls) == (1, 1, [1]) and equal(got, split())
    feature_store._VERIFIED.clear()
    assert equal(on_disk(tmp_path).get_batches("k", lambda: pytest.fail("recomputed"), rows=300), split())


def test_entries_of_the_first_format_are_never_looked_up(tmp_path: Path) -> None:
    """Keys moved to VERSION 2: a v1 `<key>.feat` blob (here, one claiming the v2 key) is ignored."""
    key = cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1")
    (tmp_path / f"{key}.feat").write_bytes(b"VLMSFC1\n" + b"0" * 64 + b"old payload")
    cache = FeatureCache(tmp_path)
    assert key not in cache and equal(cache.get(key, feats), feats()) and cache.stats.misses == 1
    assert cache.stats.corrupt == 0 and (tmp_path / f"{key}.features").is_dir()


STALLED = """
import sys, time
sys.path.insert(0, {root!r})
import torch
from trials.cache import FeatureCache
from trials.vlm.reduce import Features

def batches():                # the writer is killed between two batches of its split
    yield [Features(torch.randn(64, 64, 32), (8, 8))]
    open({flag!r}, "w").close()
    time.sleep(60)
    yield [Features(torch.randn(64, 64, 32), (8, 8))]

FeatureCache({dir!r}).get_batches("big", batches, rows=128)
"""


def test_a_writer_killed_mid_split_leaves_nothing_readable(tmp_path: Path) -> None:
    child = writer_at_its_flag(STALLED, tmp_path)  # it is past its first batch
    leftovers = list((tmp_path / "cache").glob(".*.tmp"))
    assert leftovers and not (tmp_path / "cache" / "big.features").exists()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    cache = FeatureCache(tmp_path / "cache")  # sweeps the dead writer's scratch directory
    assert "big" not in cache and list((tmp_path / "cache").iterdir()) == []
    assert equal(cache.get("big", lambda: feats(3)), feats(3)) and cache.stats.misses == 1


def test_a_disk_filling_mid_split_keeps_every_row(tiny_disk: Path) -> None:
    """A full disk part way through loses the write, not the rows already written (read back)."""
    want, calls = split(n=1200), []  # ~600 KiB on a 128 KiB disk
    cache = on_disk(tiny_disk)
    got = cache.get_batches("big", in_batches(want, 100, calls), rows=1200)
    assert equal(got, want) and calls == [1] and cache.stats.write_errors == 1
    assert [p for p in tiny_disk.rglob("*") if p.is_file()] == [], "no partial file left behind"
    assert cache.get_batches("big", lambda: pytest.fail("recomputed"), rows=1200) is got


def test_without_a_root_large_entries_spill_to_a_private_folder() -> None:
    want = split()
    cache = on_disk(None)
    got = cache.get_batches("k", in_batches(want, 64), rows=300)
    assert isinstance(got[0], StoredLayer) and equal(got, want)
    folder = got[0].tokens.path.parent.parent
    assert folder.name.startswith("vlmsearch-spill-") and folder.is_dir()
    small = FeatureCache(None).get("s", feats)  # small entries are held in RAM, nothing stays on disk
    assert isinstance(small[0], Features)
    del cache
    assert not folder.exists(), "the spill folder goes with its cache"
    assert equal(got, want), "rows already opened stay readable"


def test_a_writer_that_loses_the_race_uses_the_winners_entry(tmp_path: Path) -> None:
    """Two processes computing one key: the second to finish finds the first's entry in place,
    keeps it and drops its own (no write error, nothing left over)."""
    want = split()
    winner, loser = on_disk(tmp_path), on_disk(tmp_path)

    def racing() -> Iterator[list[Features]]:
        winner.get_batches("k", in_batches(want, 64), rows=300)  # publishes while `loser` writes
        yield from in_batches(want, 100)()

    got = loser.get_batches("k", racing, rows=300)
    assert equal(got, want) and loser.stats.write_errors == 0 and winner.stats.misses == 1
    assert got[0].tokens.path.parent == tmp_path / "k.features"
    assert [p.name for p in tmp_path.iterdir()] == ["k.features"]
