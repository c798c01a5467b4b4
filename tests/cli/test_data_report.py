"""`vlmsearch data`: the report's numbers on a small LLaVA-665K-shaped set (multi-turn, text-only
records, a missing and an unreadable image, one record over the LM's maximum), and exit 2 with
every problem named for a malformed file. The report runs in this process (typer's runner: torch
is imported once); the bad-input case as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from tests.llava_files import write_llava_set
from trials.vlm.chat import ChatFormat
from trials.vlm.lm import word_tokenizer
from vlmsearch.cli import app

ROOT = Path(__file__).resolve().parents[2]


def vlmsearch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def in_process(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def spread(values: list[int]) -> dict[str, int]:
    return {**{f"p{q}": int(np.percentile(values, q, method="higher")) for q in (50, 90, 99)},
            "max": max(values)}


def test_the_report_counts_records_turns_images_and_tokens(tmp_path: Path) -> None:
    path = write_llava_set(tmp_path / "set", n=150, text_only=10, missing=1, share=2)
    raw: list[dict[str, Any]] = json.loads(path.read_text())
    raw.append({"id": "long", "conversations": [{"from": "human", "value": "tell me a story"},
                                                {"from": "gpt", "value": "word " * 2100}]})
    path.write_text(json.dumps(raw))
    folder = path.parent / "images"
    images = sorted({r["image"] for r in raw if "image" in r})
    missing = [i for i in images if not (folder / i).exists()]
    (folder / images[0]).write_bytes(b"not a png")
    done = in_process("data", str(path), "--image-folder", str(folder), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    turns = [len(r["conversations"]) for r in raw]
    chat = ChatFormat(word_tokenizer(), system_prompt=None)
    tokens = [len(chat.encode([(t["from"], t["value"]) for t in r["conversations"]], "image" in r).input_ids)
              for r in raw]
    assert tokens[-1] == 1 + 4 + 2100 + 1  # bos, the question's words, the answer's, eos
    assert report["records"] == 151 and report["text_only"] == 11
    assert report["turns"] == sum(turns) and report["turns_per_record"] == spread(turns)
    assert report["turns_per_record"]["max"] == 8  # multi-turn records: four human/gpt pairs
    assert len(missing) == 1 and report["images"] == {
        "referenced": len(images), "missing": 1, "unreadable": 1,
        "records_affected": sum(r.get("image") in (missing[0], images[0]) for r in raw),
        "named": [f"{missing[0]} (missing: {folder / missing[0]})",
                  report["images"]["named"][1]]}
    assert report["images"]["named"][1].startswith(f"{images[0]} (unreadable: {folder / images[0]}: ")
    assert report["tokens"] == spread(tokens)
    assert report["max_length"] == 2048 and "max_position_embeddings" in report["max_length_from"]
    assert report["over_max_length"] == 1 and report["lm"] == "tiny-llama"
    text = in_process("data", str(path), "--image-folder", str(folder))
    assert text.exit_code == 0, text.stderr
    lines = text.stdout.splitlines()
    per = spread(turns)
    assert lines[0] == (f"{path}: 151 records, {sum(turns):,} turns (per record: p50 {per['p50']}, "
                        f"p90 {per['p90']}, p99 {per['p99']}, max 8)")
    assert "text-only records (no image): 11 (7.3%)" in lines
    assert f"{len(images)} referenced, 1 missing, 1 unreadable" in lines[2]
    assert lines[-1] == ("over the tiny-llama maximum 2,048 (the LM config's max_position_embeddings): "
                         "1 records")


def test_a_malformed_file_is_bad_input_with_every_problem_named(tmp_path: Path) -> None:
    path = write_llava_set(tmp_path / "set", n=20, text_only=2)
    raw = json.loads(path.read_text())
    del raw[3]["conversations"]
    raw[7]["image"] = 7
    path.write_text(json.dumps(raw))
    done = vlmsearch("data", str(path), "--image-folder", str(path.parent / "images"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "record 'r3' has no 'conversations'" in done.stderr
    assert "record 'r7': 'image' must be one relative path, got 7" in done.stderr
    assert done.stderr.startswith(f"2 record(s) of '{path}' cannot be used")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    missing = in_process("data", str(tmp_path / "none.json"), "--image-folder", str(tmp_path))
    assert missing.exit_code == 2 and "FILE" in missing.stderr and "does not exist" in missing.stderr
