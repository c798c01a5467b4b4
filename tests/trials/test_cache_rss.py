"""Host memory does not grow with the data: a real trial whose cached features pass 3 GB keeps its
peak RSS growth under 1 GB, computing them (cold) and reading them back (warm).

It runs `bench/cache_rss.py` (each phase in a fresh process, so this process's own memory does
not count): tiny-convnext's two stride-4 maps at 512 px, untouched, over 1600 probe images.
About 80 s on two cores, 3.4 GB of temporary disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FEATURE_BYTES = 3 * 10**9
GROWTH_LIMIT = 10**9


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_trial_with_3_gb_of_features_grows_rss_by_under_1_gb(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < 2 * FEATURE_BYTES:
        pytest.skip(f"needs ~3.4 GB of temporary disk for the features, {free / 1e9:.1f} GB free")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "cache_rss.py"), "--json",
                           "--tmp", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=880,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    cold, warm = json.loads(done.stdout.strip().splitlines()[-1])
    report = "; ".join(f"{p['phase']}: {p['feature_bytes'] / 1e9:.2f} GB of features, peak RSS growth "
                       f"{p['growth'] / 2**20:.0f} MiB, {p['wall_s']:.0f} s" for p in (cold, warm))
    print(report)
    assert (cold["misses"], warm["misses"], warm["disk_hits"]) == (2, 0, 2), report
    for p in (cold, warm):
        assert p["feature_bytes"] >= FEATURE_BYTES, report
        assert p["growth"] < GROWTH_LIMIT, report
    assert not list(tmp_path.iterdir()), "the bench removes its cache"
