"""The feature cache: hits, atomic writes, corrupt and half-written entries never used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trials.cache import FeatureCache, cache_key
from trials.vlm.reduce import Features


def feats(seed: int = 0, n: int = 64) -> list[Features]:
    g = torch.Generator().manual_seed(seed)
    return [Features(torch.randn(n, 16, 8, generator=g), (4, 4)),
            Features(torch.randn(n, 16, 4, generator=g), (4, 4))]


def equal(a: list[Features], b: list[Features]) -> bool:
    return all(torch.equal(x.tokens, y.tokens) and x.grid == y.grid for x, y in zip(a, b, strict=True))


def test_key_covers_everything_the_features_depend_on() -> None:
    base = cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1")
    assert base == cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data1")
    for changed in [cache_key("preset:tiny-clip@2", 96, (-1,), 16, "data1"),
                    cache_key("preset:tiny-clip@1", 128, (-1,), 16, "data1"),
                    cache_key("preset:tiny-clip@1", 96, (-2,), 16, "data1"),
                    cache_key("preset:tiny-clip@1", 96, (-1,), 64, "data1"),
                    cache_key("preset:tiny-clip@1", 96, (-1,), 16, "data2")]:
        assert changed != base


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
    path = tmp_path / "k.feat"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cache = FeatureCache(tmp_path)
    got = cache.get("k", lambda: feats(0))
    assert cache.stats.corrupt == 1 and cache.stats.misses == 1 and equal(got, feats(0))
    assert equal(FeatureCache(tmp_path).get("k", lambda: feats(5)), feats(0)), "rewritten whole"


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    FeatureCache(tmp_path).get("k", feats)
    path = tmp_path / "k.feat"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
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


def test_killed_writer_leaves_no_entry_that_is_read(tmp_path: Path) -> None:
    flag = tmp_path / "writing"
    code = WRITER.format(root=str(Path(__file__).resolve().parents[2]), flag=str(flag),
                         dir=str(tmp_path / "cache"))
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not flag.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert flag.exists(), "the writer never reached its write"
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
