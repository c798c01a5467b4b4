"""A pool of 12 tiny experts (six presets twice) over test_malformed's base space, for the check's
speed (bench/check_speed.py) and the resource model's sampling of big pools."""

from __future__ import annotations

from tests.search_space.test_malformed import BASE

PRESETS = ["tiny-clip", "tiny-dinov2", "tiny-sam", "tiny-convnext", "tiny-mae", "tiny-siglip"]
TOKENS = {"tiny-sam": "16", "tiny-convnext": "9"}  # the grids these presets have at 96 px


def pool_space(largest_subset: int) -> str:
    pool = "\n".join(f"    e{i}: {{source: {PRESETS[i % 6]}, tokens: "
                     f"{TOKENS.get(PRESETS[i % 6], '{choices: [16, 64]}')}}}" for i in range(12))
    head, tail = BASE.split("  pool:\n")[0], "  subset:" + BASE.split("  subset:")[1]
    return (head + "  pool:\n" + pool + "\n" + tail.replace("subset: {min: 1, max: 3}",
            f"subset: {{min: 1, max: {largest_subset}}}").replace("max: 512", "max: 100000"))
