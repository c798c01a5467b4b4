"""A small LLaVA-665K-shaped data set written to disk, for tests (and bench/llava_records.py).

`write_llava_set(folder, n, text_only, missing)` writes `folder/data.json` and its images under
`folder/images`. Like LLaVA-665K: multi-turn human/gpt conversations (1-4 pairs; every 10th opens
with a system turn), `<image>` at the start of the first human turn or at its end, an image
(`images/coco/NNNNN.png`, 8x6 px, one colour) shared by `share` consecutive records, and
`text_only` records spread evenly with no `image` and no tag (ShareGPT's). Every 5th record with
an image asks its colour (skill "color", a closed skill of 3 answers); the others answer freely,
record i's answers padded with i % `words` filler words.
The `missing` highest-numbered images are not written (their records stay in the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def text_only_rows(n: int, text_only: int) -> set[int]:
    """Which records have no image: `text_only` of them, evenly spread."""
    return {(k * n) // text_only + (n // text_only) // 2 for k in range(text_only)} if text_only else set()


def image_name(group: int) -> str:
    return f"coco/{group:05d}.png"


def colour_of(group: int) -> str:
    return list(COLOURS)[group % len(COLOURS)]


def record(i: int, group: int | None, words: int = 7) -> dict[str, Any]:
    """Record i: with `group`'s image, or text-only (None)."""
    pairs = 1 + i % 4
    turns: list[dict[str, str]] = [{"from": "system", "value": "answer briefly"}] if i % 10 == 0 else []
    colour = group is not None and i % 5 == 0
    for k in range(pairs):
        question = "what color is the picture ?" if colour and k == 0 else f"question {k} of record {i} ?"
        if group is not None and k == 0:
            question = f"<image>\n{question}" if i % 2 else f"{question}\n<image>"
        filler = "word " * (i % words)
        answer = colour_of(group) if colour and k == 0 else f"answer {k} of record {i} {filler}"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer.strip()}]
    row: dict[str, Any] = {"id": f"r{i}", "conversations": turns}
    if group is not None:
        row["image"] = image_name(group)
    if colour:
        row["skill"] = "color"
    return row


def records(n: int, text_only: int, share: int, words: int = 7) -> list[dict[str, Any]]:
    """The n records; images numbered by position among the records that have one."""
    skip = text_only_rows(n, text_only)
    out, with_image = [], 0
    for i in range(n):
        if i in skip:
            out.append(record(i, None, words))
        else:
            out.append(record(i, with_image // share, words))
            with_image += 1
    return out


def write_llava_set(folder: Path, n: int = 120, text_only: int = 8, missing: int = 0, share: int = 2,
                    words: int = 7) -> Path:
    """Write the set (see the module docstring) under `folder`; the JSON file's path."""
    from PIL import Image

    rows = records(n, text_only, share, words)
    groups = sorted({int(r["image"][5:10]) for r in rows if "image" in r})
    for group in groups[:len(groups) - missing]:
        file = folder / "images" / image_name(group)
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), COLOURS[colour_of(group)]).save(file)
    path = folder / "data.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path
