"""LLaVA records through HF datasets: streamed validation naming every bad record, text-only and
multi-turn records kept as written, the Arrow cache (memory-mapped, rebuilt when the file
changes), image groups that never straddle the splits, and `skip_missing`'s counts."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from search_space.point import DataConfig
from tests.llava_files import write_llava_set
from trials.data import DataError, check_data, load_benchmark
from trials.data.base import ChatDataset
from trials.data.llava import can_eval, split_rows
from trials.data.records import ArrowTurns, column, read_records, values_at


def config(path: Path, **fields: Any) -> DataConfig:
    return DataConfig.model_validate({"benchmark": "llava", "path": str(path), "image_folder":
                                      str(path.parent / "images"), "train_size": 60, "eval_size": 30,
                                      "image_size": 16, **fields})


def as_turns(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((t["from"], t["value"]) for t in record["conversations"])


@pytest.fixture
def data_set(tmp_path: Path) -> Path:
    return write_llava_set(tmp_path / "set", n=120, text_only=8, missing=0)


def test_every_bad_record_is_named_in_one_error(tmp_path: Path) -> None:
    good = {"id": "ok", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                             {"from": "gpt", "value": "a"}]}
    bad = [
        ([1, 2], "record #1 is a JSON list, not an object"),
        ({"id": "nc", "image": "a.png"}, "record 'nc' has no 'conversations'"),
        ({"id": "str", "conversations": "hi"}, "record 'str': 'conversations' must be a non-empty list"),
        ({"id": "role", "conversations": [{"from": "bot", "value": "x"}]}, "turn 0 of 'conversations'"),
        ({"id": "val", "conversations": [{"from": "gpt", "value": 3}]}, "turn 0 of 'conversations'"),
        ({"id": "nogpt", "conversations": [{"from": "human", "value": "q"}]}, "record 'nogpt': "
         "'conversations' has no gpt turn"),
        ({**good, "id": "img", "image": ["a.png", "b.png"]}, "record 'img': 'image' must be one relative"),
        ({**good, "id": "empty", "image": " "}, "record 'empty': 'image' must be one relative path"),
        ({**good, "id": "two", "conversations": [{"from": "human", "value": "<image> <image>"},
                                                 {"from": "gpt", "value": "a"}]},
         "record 'two' has 2 '<image>' tags"),
        ({"id": "tag", "conversations": good["conversations"]},
         "record 'tag' has an '<image>' tag but no 'image'"),
        ({"id": "nohuman", "image": "a.png", "conversations": [{"from": "gpt", "value": "a"}]},
         "record 'nohuman' has an image but no human turn"),
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([good, *(b for b, _ in bad), good, *[[0]] * 4]))
    with pytest.raises(DataError) as caught:
        read_records(path)
    message = str(caught.value)
    assert message.startswith(f"15 record(s) of '{path}' cannot be used: ")
    for _, expected in bad[:10]:  # the first ten named, the rest counted
        assert expected in message, expected
    assert bad[10][1] not in message
    assert "and 5 more" in message and "fix or remove them" in message
    assert str(path) in message and len(message.splitlines()) == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("", "is not valid JSON"), ("[{}, ", "is not valid JSON"), ('{"a": 1}', "holds a JSON dict"),
    ('"x"', "holds a JSON str"), ("[]", "holds an empty list: no records"),
])
def test_a_broken_file_says_what_it_holds(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "data.json"
    path.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_benchmark(config(path))


def test_turns_are_kept_as_written_and_text_only_records_train_as_text(data_set: Path) -> None:
    raw = json.loads(data_set.read_text())
    train, evaluation = load_benchmark(config(data_set, train_size=100, eval_size=10))
    assert isinstance(train, ChatDataset) and train.skipped == 0
    table = read_records(data_set)
    rows = split_rows(column(table, "image"), can_eval(table), 100, 10, 0).train
    assert isinstance(train.turns, ArrowTurns) and list(train.turns.rows) == rows.tolist()
    text_only = 0
    for i, row in enumerate(rows):
        record = raw[row]
        assert train.turns[i] == as_turns(record)  # every turn; `<image>` where the record puts it
        assert train.has_image[i] == ("image" in record)
        assert (train.images.files[i] is None) == ("image" not in record)
        text_only += "image" not in record
    assert text_only > 0 and not train.images[[i for i in range(100) if not train.has_image[i]]].any()
    tags = {t[1].index("<image>") == 0 for i in range(100) for t in train.turns[i] if "<image>" in t[1]}
    assert tags == {True, False}  # at the start of a turn, and at its end
    assert max(len(t) for t in train.turns) == 8  # 4 human/gpt pairs
    assert any(t[0] == ("system", "answer briefly") for t in train.turns)
    assert all(q == q.strip() and "<image>" not in q for q in evaluation.questions)
    assert evaluation.candidates == {"color": ["blue", "green", "red"]}
    restored = pickle.loads(pickle.dumps(train.turns))  # DataLoader workers, Ray
    assert [restored[i] for i in range(5)] == [train.turns[i] for i in range(5)]


def test_the_table_is_cached_memory_mapped_and_rebuilt_when_the_file_changes(data_set: Path,
                                                                              datasets_cache: Path) -> None:
    first = read_records(data_set)
    files = [f["filename"] for f in first.cache_files]
    assert files and all(Path(f).is_relative_to(datasets_cache) for f in files)
    assert read_records(data_set).cache_files == first.cache_files  # same version: the same table
    raw = json.loads(data_set.read_text())
    raw[0]["conversations"][-1]["value"] = "changed"
    stat = data_set.stat()
    data_set.write_text(json.dumps(raw))
    os.utime(data_set, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = read_records(data_set)
    assert second.cache_files != first.cache_files
    assert column(second, "conversations")[0].as_py()[-1]["value"] == "changed"
    assert column(first, "conversations")[0].as_py()[-1]["value"] != "changed"


def oracle(raw: list[dict[str, Any]], train_size: int, eval_size: int, seed: int, bad: set[str]
           ) -> tuple[list[int], list[int], int]:
    """Today's split_records, written plainly: groups by image in first-appearance order (a
    text-only record alone), seeded permutation, train then eval (eval: records with an image);
    a group whose image is in `bad` skipped, counting the records it would have given."""
    groups: dict[object, list[int]] = {}
    for i, record in enumerate(raw):
        key = os.path.normpath(record["image"]) if "image" in record else ("text", i)
        groups.setdefault(key, []).append(i)
    keys = list(groups)
    chosen: tuple[list[int], list[int]] = ([], [])
    skipped = 0
    for k in np.random.default_rng(seed).permutation(len(keys)):
        which = 0 if len(chosen[0]) < train_size else 1
        split, size = chosen[which], (train_size, eval_size)[which]
        if len(split) >= size:
            break
        rows = [r for r in groups[keys[int(k)]] if which == 0 or "image" in raw[r]]
        if rows and "image" in raw[rows[0]] and raw[rows[0]]["image"] in bad:
            skipped += min(len(rows), size - len(split))
            continue
        split.extend(rows[:size - len(split)])
    return chosen[0], chosen[1], skipped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_follow_the_group_walk_and_never_share_an_image(tmp_path: Path, seed: int) -> None:
    path = write_llava_set(tmp_path / "set", n=150, text_only=10, share=3)
    raw = json.loads(path.read_text())
    table = read_records(path)
    split = split_rows(column(table, "image"), can_eval(table), 80, 40, seed)
    walked = oracle(raw, 80, 40, seed, set())
    assert (split.train.tolist(), split.evaluation.tolist(), split.skipped) == walked
    train_images = {raw[r].get("image") for r in split.train} - {None}
    assert not train_images & {raw[r]["image"] for r in split.evaluation}
    assert all("image" in raw[r] for r in split.evaluation)
    assert len(split.train) == 80 and len(split.evaluation) == 40


def test_missing_images_are_named_or_skipped_and_counted(tmp_path: Path) -> None:
    path = write_llava_set(tmp_path / "set", n=120, text_only=8, missing=4, share=2)
    raw = json.loads(path.read_text())
    gone = {r["image"] for r in raw if "image" in r and not (path.parent / "images" / r["image"]).exists()}
    assert len(gone) == 4
    cfg = config(path, train_size=80, eval_size=30, seed=3)
    expected_train, expected_eval, skipped = oracle(raw, 80, 30, 3, gone)
    assert skipped > 0  # this seed's walk passes missing images
    with pytest.raises(DataError) as caught:
        load_benchmark(cfg)
    named = [image for image in gone if f"image '{image}' of record" in str(caught.value)]
    assert named and "is missing" in str(caught.value) and "data.skip_missing: true" in str(caught.value)
    with pytest.raises(DataError):
        check_data(cfg)
    skip = cfg.model_copy(update={"skip_missing": True})
    train, evaluation = load_benchmark(skip)
    check_data(skip)  # the data check skips them too
    assert train.skipped == skipped and (len(train), len(evaluation)) == (80, 30)
    assert [train.turns[i] for i in range(len(train))] == [as_turns(raw[r]) for r in expected_train]
    assert evaluation.answers == [raw[r]["conversations"][1 + (r % 10 == 0)]["value"] for r in expected_eval]
    files = (*train.images.files, *evaluation.images.files)
    used = {str(f.relative_to(path.parent / "images")) for f in files if f is not None}
    assert not used & gone


def test_too_few_records_left_for_eval_says_so(tmp_path: Path) -> None:
    path = write_llava_set(tmp_path / "set", n=40, text_only=30, share=1)
    with pytest.raises(DataError, match=r"only .* records of .* with an image and a question"):
        load_benchmark(config(path, train_size=20, eval_size=15))


def test_values_at_reads_rows_across_chunks_in_any_order() -> None:
    chunked = pa.chunked_array([pa.array(["a", "b", None]), pa.array([], pa.string()), pa.array(["c", "d"])])
    rows = np.array([4, 0, 2, 3, 3, 1])
    assert values_at(chunked, rows) == ["d", "a", None, "c", "c", "b"] == chunked.take(rows).to_pylist()
    assert values_at(chunked, np.zeros(0, dtype=np.int64)) == []
