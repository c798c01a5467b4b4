"""Benchmarks: the probe (determinism, balance, disjoint splits, pixels that match the answers,
digits in their slots and unreadable at low resolution) and LLaVA-format loading (splits,
candidates, errors)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from search_space.components import PROBE_SKILLS
from search_space.point import DataConfig
from trials.data import (
    BENCHMARKS,
    DataError,
    QADataset,
    check_data,
    load_benchmark,
)
from trials.data.base import ChatDataset
from trials.data.images import ImageFiles, batches, decode
from trials.data.llava import can_eval, split_rows
from trials.data.probe import COLORS, ProbeSplit, digit_half, digit_side, digit_slots, probe_splits
from trials.data.records import column, read_records
from trials.metrics import exact_match, normalize_answer
from trials.vlm.lm import word_tokenizer

# ---- probe ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe() -> tuple[ProbeSplit, ProbeSplit]:
    """The default 96 px probe, with a large eval split to measure digit readability on."""
    return probe_splits(DataConfig(train_size=2000, eval_size=1200))


def small(seed: int = 0, size: int = 96) -> tuple[QADataset, QADataset]:
    train, evaluation = probe_splits(DataConfig(train_size=60, eval_size=30, image_size=size, seed=seed))
    return train.dataset, evaluation.dataset


def image_hashes(data: QADataset) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in data.images}


def test_registry_names_both_benchmarks() -> None:
    assert set(BENCHMARKS.names()) == {"probe", "llava"}
    with pytest.raises(KeyError, match="did you mean 'probe'"):
        BENCHMARKS.get("prob")


def test_the_probe_loader_gives_chat_turns_and_qa() -> None:
    """Both benchmarks return (ChatDataset, QADataset): the probe's train split is one human
    question and one gpt answer per image."""
    train, evaluation = load_benchmark(DataConfig(train_size=60, eval_size=30, image_size=32))
    drawn = small(size=32)
    assert isinstance(train, ChatDataset) and isinstance(evaluation, QADataset)
    assert torch.equal(train.images, drawn[0].images)
    assert list(train.turns) == [(("human", q), ("gpt", a))
                                 for q, a in zip(drawn[0].questions, drawn[0].answers, strict=True)]
    assert list(train.has_image) == [True] * 60 and train.skipped == 0
    assert evaluation.answers == drawn[1].answers


def test_probe_is_deterministic_and_seed_sensitive() -> None:
    a, b, c = small(0), small(0), small(1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.images, y.images) and x.fingerprint() == y.fingerprint()
        assert (x.questions, x.answers, x.skills) == (y.questions, y.answers, y.skills)
    assert a[0].fingerprint() != c[0].fingerprint() and a[1].fingerprint() != c[1].fingerprint()
    assert a[0].fingerprint() != a[1].fingerprint()


@pytest.mark.parametrize("size", [16, 64, 96, 200])
def test_probe_sizes(size: int) -> None:
    train, evaluation = small(size=size)
    assert (len(train), len(evaluation)) == (60, 30)
    for data in (train, evaluation):
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, size, size)
        assert data.candidates.keys() == set(PROBE_SKILLS)


def test_probe_skills_balanced_and_splits_disjoint(probe: tuple[ProbeSplit, ProbeSplit]) -> None:
    for split in probe:
        counts = Counter(split.dataset.skills)
        assert set(counts) == set(PROBE_SKILLS)
        assert max(counts.values()) - min(counts.values()) <= 1
        assert len(image_hashes(split.dataset)) == len(split.dataset)
    assert not image_hashes(probe[0].dataset) & image_hashes(probe[1].dataset)
    train_digits, eval_digits = digit_half("train")[0], digit_half("eval")[0]
    assert len(train_digits) + len(eval_digits) == 1797  # disjoint halves of sklearn's digits


def test_probe_answers_are_candidates_and_known_words(probe: tuple[ProbeSplit, ProbeSplit]) -> None:
    tokenizer = word_tokenizer()
    texts: set[str] = set()
    for split in probe:
        data = split.dataset
        for skill, answer in zip(data.skills, data.answers, strict=True):
            assert answer in data.candidates[skill]
            assert " " not in answer and "-" not in answer
        for skill in PROBE_SKILLS:  # every candidate of a skill is drawn somewhere
            drawn = {a for s, a in zip(data.skills, data.answers, strict=True) if s == skill}
            assert drawn == set(data.candidates[skill])
        texts |= set(data.questions) | {a for c in data.candidates.values() for a in c}
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text


def foreground(img: torch.Tensor) -> np.ndarray:
    """Pixels far from the image's median colour: the drawn objects (S, S) bool."""
    pixels = img.numpy().transpose(1, 2, 0).astype(np.float32)
    background = np.median(pixels.reshape(-1, 3), axis=0)
    return np.linalg.norm(pixels - background, axis=-1) > 60


def nearest_color(img: torch.Tensor, mask: np.ndarray) -> str:
    mean = img.numpy().transpose(1, 2, 0)[mask].mean(axis=0)
    return min(COLORS, key=lambda name: float(np.linalg.norm(mean - np.array(COLORS[name]))))


def normalised(mask: np.ndarray, side: int = 16) -> np.ndarray:
    """The mask cropped to its bounding box and resampled (nearest) to side x side."""
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    r = ((np.arange(side) + 0.5) * crop.shape[0] / side).astype(int)
    c = ((np.arange(side) + 0.5) * crop.shape[1] / side).astype(int)
    return crop[r][:, c]


def shape_masks(split: ProbeSplit) -> tuple[np.ndarray, np.ndarray]:
    """The shape samples' normalised object masks (n, 256) and their answers."""
    data = split.dataset
    keep = [i for i, skill in enumerate(data.skills) if skill == "shape"]
    return (np.stack([normalised(foreground(data.images[i])).ravel() for i in keep]),
            np.array([data.answers[i] for i in keep]))


def test_probe_pixels_match_the_answers(probe: tuple[ProbeSplit, ProbeSplit]) -> None:
    """Colour, count, position and relation answers read back off the pixels; shapes too, by a
    nearest-neighbour reader of the train masks (robust to how a shape falls on the pixel grid)."""
    data, boxes = probe[1].dataset, probe[1].boxes
    size = data.images.shape[-1]
    wrong = Counter()
    rows = zip(data.images, data.questions, data.answers, data.skills, boxes, strict=True)
    for img, question, answer, skill, drawn in rows:
        mask = foreground(img)
        if skill == "color":
            wrong[skill] += nearest_color(img, mask) != answer
        elif skill == "count":
            wrong[skill] += ndimage.label(mask)[1] != int(answer)
        elif skill == "position":
            rows, cols = np.nonzero(mask)
            along = cols if "left" in question else rows
            first_half = answer in ("left", "top")
            wrong[skill] += not (along.max() < size // 2 if first_half else along.min() >= size // 2)
        elif skill == "relation":
            y0, x0, y1, x1 = drawn[0]  # the answer's object, then the other
            box = np.zeros_like(mask)
            box[y0:y1, x0:x1] = True
            wrong[skill] += nearest_color(img, mask & box) != answer
            other = drawn[1]
            wrong[skill] += not (x1 <= other[1] if "left" in question else y1 <= other[0])
    assert sum(wrong.values()) == 0, dict(wrong)
    reader = KNeighborsClassifier(1).fit(*shape_masks(probe[0]))
    masks, shapes = shape_masks(probe[1])
    assert (reader.predict(masks) == shapes).mean() >= 0.98


def digit_crops(split: ProbeSplit, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Each small_text digit's cell, after average-pooling the image by `factor` and upsampling."""
    data = split.dataset
    keep = [i for i, skill in enumerate(data.skills) if skill == "small_text"]
    grey = data.images[keep].float().mean(dim=1, keepdim=True)  # (n, 1, S, S)
    low = torch.nn.functional.avg_pool2d(grey, factor)
    seen = torch.nn.functional.interpolate(low, scale_factor=factor, mode="nearest")[:, 0].numpy()
    crops = []
    for row, i in enumerate(keep):
        y0, x0, y1, x1 = split.boxes[i][0]
        cell = seen[row, y0:y1, x0:x1]
        crops.append(((cell.max() - cell) / (np.ptp(cell) + 1e-6)).ravel())  # ink = 1
    return np.stack(crops), np.array([data.answers[i] for i in keep])


def readability(probe: tuple[ProbeSplit, ProbeSplit], factor: int) -> dict[str, float]:
    """Eval accuracy of classifiers fit on the train digits seen at the same resolution."""
    x_train, y_train = digit_crops(probe[0], factor)
    x_eval, y_eval = digit_crops(probe[1], factor)
    classifiers = {"1nn": KNeighborsClassifier(1), "logreg": LogisticRegression(max_iter=3000)}
    return {name: float((clf.fit(x_train, y_train).predict(x_eval) == y_eval).mean())
            for name, clf in classifiers.items()}


@pytest.mark.parametrize(("size", "low"), [(96, 24), (192, 24), (64, 16)])
def test_small_text_is_unreadable_at_low_resolution(probe: tuple[ProbeSplit, ProbeSplit], size: int,
                                                    low: int) -> None:
    """Seen at `low` px (pooled by size / low) the digits are far less readable than at full
    size (64 -> 16 px is examples/planted.yaml's pair of resolutions). These readers are told
    where the digit is: from its 2x2 pooled pixels they get 0.35-0.55 (chance 0.1; logistic
    regression on all 2x2-pooled train digits reads 0.47 of the eval ones), while the VLMs of
    the planted search, which are not told, stay at chance."""
    splits = probe if size == 96 else probe_splits(DataConfig(train_size=1200, eval_size=600,
                                                              image_size=size))
    full, pooled = readability(splits, 1), readability(splits, size // low)
    assert min(full.values()) > 0.8, full
    assert max(pooled.values()) < 0.6 and min(full.values()) - max(pooled.values()) > 0.3, pooled


@pytest.mark.parametrize("size", [16, 64, 96, 200])
def test_small_text_digits_sit_in_the_four_central_slots(size: int) -> None:
    """Every digit fills one of four digit-sized cells around the centre, each slot is used, and
    at 96 px the cells are patches of an 8 px-patch ViT (the central 2x2 of its 12x12 grid)."""
    side = digit_side(size)
    slots = digit_slots(size)
    starts = sorted({y for y, _ in slots})
    assert len(set(slots)) == 4 and starts == sorted({x for _, x in slots})
    assert len(starts) == 2 and starts[1] - starts[0] == side  # a 2x2 block of adjacent cells
    assert starts[0] >= 0 and starts[1] + side <= size           # inside the image
    assert starts[0] < size / 2 < starts[1] + side               # around its centre
    train, evaluation = probe_splits(DataConfig(train_size=120, eval_size=60, image_size=size))
    used = Counter()
    for split in (train, evaluation):
        for skill, drawn in zip(split.dataset.skills, split.boxes, strict=True):
            if skill == "small_text":
                (y0, x0, y1, x1), = drawn
                assert (y1 - y0, x1 - x0) == (side, side) and (y0, x0) in slots
                used[y0, x0] += 1
    assert set(used) == set(slots), used
    assert digit_slots(96) == ((40, 40), (40, 48), (48, 40), (48, 48))


# ---- llava ------------------------------------------------------------------------------------

PALETTE = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def turn(human: str, gpt: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


@pytest.fixture
def llava(tmp_path: Path) -> Path:
    """75 records over 45 images: 'color' (3 answers), 'caption' (60: open-ended), 'vqa'."""
    folder, records = tmp_path / "images", []
    for i in range(12):
        name = list(PALETTE)[i % 3]
        write_image(folder / f"color/{i}.png", PALETTE[name])
        records.append({"id": f"c{i}", "image": f"color/{i}.png", "skill": "color",
                        "conversations": turn("<image>\nWhat color is the picture?", name)})
    for i in range(60):
        write_image(folder / f"cap/{i // 2}.png", (4 * (i // 2), 100, 100))  # two captions per image
        records.append({"id": f"p{i}", "image": f"cap/{i // 2}.png", "category": "caption",
                        "conversations": turn("Describe it.\n<image>", f"caption {i}")})
    for i in range(3):
        write_image(folder / f"q/{i}.png", (0, 0, 0), size=(8, 40))
        records.append({"id": f"q{i}", "image": f"q/{i}.png", "conversations": [
            {"from": "system", "value": "be brief"}, *turn("<image>\nIs it dark?", "yes"),
            *turn("Is it tall?", "no")]})
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def llava_config(path: Path, **fields: object) -> DataConfig:
    return DataConfig.model_validate({"benchmark": "llava", "path": str(path), "image_folder":
                                      str(path.parent / "images"), "train_size": 40, "eval_size": 20,
                                      "image_size": 32, **fields})


def chosen(path: Path, train_size: int = 40, eval_size: int = 20, seed: int = 0
           ) -> tuple[list[int], list[int]]:
    """The table rows the loader picks for train and for eval."""
    table = read_records(path)
    split = split_rows(column(table, "image"), can_eval(table), train_size, eval_size, seed)
    return split.train.tolist(), split.evaluation.tolist()


def test_llava_loads_splits_and_candidates(llava: Path) -> None:
    train, evaluation = load_benchmark(llava_config(llava))
    assert isinstance(train, ChatDataset) and isinstance(evaluation, QADataset)
    assert (len(train), len(evaluation)) == (40, 20) and train.skipped == 0
    assert list(train.has_image) == [True] * 40
    assert evaluation.candidates == {"color": ["blue", "green", "red"], "vqa": ["yes"]}
    for data in (train, evaluation):
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, 32, 32)
    raw = json.loads(llava.read_text())
    train_rows, eval_rows = chosen(llava)
    assert not {raw[r]["image"] for r in train_rows} & {raw[r]["image"] for r in eval_rows}
    for i, row in enumerate(train_rows):  # every turn, as written
        assert train.turns[i] == tuple((t["from"], t["value"]) for t in raw[row]["conversations"])
    rows = zip(evaluation.images, evaluation.questions, evaluation.answers, evaluation.skills, eval_rows,
               strict=True)
    for img, question, answer, skill, row in rows:
        assert "<image>" not in question and question == question.strip()
        assert skill == raw[row].get("skill", raw[row].get("category", "vqa"))
        if skill == "color":
            assert question == "What color is the picture?"
            mean = img.float().mean(dim=(1, 2))
            assert torch.allclose(mean, torch.tensor(PALETTE[answer], dtype=torch.float), atol=2)
        elif skill == "vqa":
            assert (question, answer) == ("Is it dark?", "yes")  # the first human/gpt pair
            assert int(img.max()) == 0
        else:
            assert skill == "caption" and question == "Describe it." and answer.startswith("caption ")
    again = load_benchmark(llava_config(llava))
    other = load_benchmark(llava_config(llava, seed=1))
    assert again[0].fingerprint() == train.fingerprint() != other[0].fingerprint()
    assert again[1].answers == evaluation.answers != other[1].answers


def test_llava_pads_images_square_when_asked(llava: Path) -> None:
    """`pad` reaches both splits' ImageFiles (an 8x40 image gets grey bars, not stretched)."""
    train, evaluation = load_benchmark(llava_config(llava), pad=(128, 128, 128))
    assert train.images.pad == evaluation.images.pad == (128, 128, 128)
    img = next(data.images[i] for data in (train, evaluation) for i, f in enumerate(data.images.files)
               if f.parent.name == "q")  # an 8x40 black image
    assert int(img[:, 16, 0].min()) == 128 and int(img[:, 16, 16].max()) == 0


def test_llava_image_folder_defaults_to_the_json_folder(llava: Path) -> None:
    moved = llava.parent / "images" / "data.json"
    moved.write_text(llava.read_text())
    train, _ = load_benchmark(llava_config(moved, image_folder=None, train_size=5, eval_size=5))
    assert len(train) == 5


def break_records(path: Path, change: str) -> str:
    """Damage the fixture's data set one way; the text its error must contain."""
    records = json.loads(path.read_text())
    if change == "no json":
        path.unlink()
        return "does not exist"
    if change == "not a list":
        path.write_text(json.dumps({"data": records}))
        return "holds a JSON dict, not a list of records"
    if change == "bad json":
        path.write_text("[{")
        return "is not valid JSON"
    if change == "no image":  # text-only is fine, but its <image> tag then has no image
        del records[3]["image"]
        path.write_text(json.dumps(records))
        return "record 'c3' has an '<image>' tag but no 'image'"
    if change == "no conversations":
        del records[5]["conversations"]
        path.write_text(json.dumps(records))
        return "record 'c5' has no 'conversations'"
    if change == "no answer":
        records[7]["conversations"] = records[7]["conversations"][:1]
        path.write_text(json.dumps(records))
        return "record 'c7': 'conversations' has no gpt turn"
    if change in ("missing image", "unreadable image"):
        train, evaluation = chosen(path)
        record = next(records[r] for r in train + evaluation if records[r].get("skill") == "color")
        file = path.parent / "images" / record["image"]
        file.unlink() if change == "missing image" else file.write_bytes(b"not a png")
        return f"image '{record['image']}' of record '{record['id']}' is {change.split()[0]}"
    assert change == "too few records"
    path.write_text(json.dumps(records[:50]))
    return "has 50 records, fewer than data.train_size + data.eval_size = 40 + 20 = 60"


@pytest.mark.parametrize("change", ["no json", "not a list", "bad json", "no image", "no conversations",
                                    "no answer", "missing image", "unreadable image", "too few records"])
def test_llava_errors_name_the_problem(llava: Path, change: str) -> None:
    expected = break_records(llava, change)
    for step in (load_benchmark, check_data):  # the data check runs the same validation
        with pytest.raises(DataError) as caught:
            step(llava_config(llava))
        assert expected in str(caught.value)
        assert isinstance(caught.value, ValueError)


def test_llava_needs_a_path() -> None:
    with pytest.raises(DataError, match=r"data\.path is not set"):
        load_benchmark(DataConfig(benchmark="llava"))


@pytest.mark.parametrize(("raw", "normal"), [
    ("Yes.", "yes"), ("The Red  car!", "red car"), ("two", "2"), ("An apple, a pear", "apple pear"),
    ("3.5", "3.5"), ("1,000", "1000"), ("don't", "don't"), ("dont", "don't"), ("t-shirt", "t shirt"),
    ("None", "0"),
])
def test_official_answer_normalisation(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_exact_match() -> None:
    assert exact_match("Two", ["2", "3"]) and exact_match("the cat.", "Cat")
    assert not exact_match("dog", ["cat", "a cat"])


def test_llava_images_are_decoded_on_demand_and_hashed_from_their_files(llava: Path) -> None:
    """A LLaVA split keeps file paths: indexing, iteration, worker-decoded batches and subsets
    give the same pixels; the fingerprint follows the files' bytes, not where they live."""
    train, evaluation = load_benchmark(llava_config(llava))
    assert isinstance(train.images, ImageFiles) and len(train.images) == 40
    whole = torch.stack(list(train.images))  # (40, 3, 32, 32), one image at a time
    assert torch.equal(torch.cat(list(train.images.batches(8))), whole)  # DataLoader workers
    assert torch.equal(torch.cat(list(batches(train.images, 64))), whole)  # one batch, no workers
    assert torch.equal(train.images[[5, 2, 5]], whole[[5, 2, 5]])
    assert torch.equal(train.images[torch.tensor([1, 0])], whole[[1, 0]])
    assert torch.equal(train.images[3], whole[3])
    part = evaluation.subset([7, 1])
    assert isinstance(part.images, ImageFiles) and torch.equal(part.images[:], evaluation.images[[7, 1]])
    file = train.images.files[0]
    copy = llava.parent / "copy"
    copy.mkdir()
    moved = copy / "data.json"
    moved.write_text(llava.read_text())
    shutil.copytree(llava.parent / "images", copy / "images")
    assert load_benchmark(llava_config(moved))[0].fingerprint() == train.fingerprint()
    pixel = decode(file, 32)[0, 0]
    write_image(file, (255 - int(pixel[0]), 7, 7))  # same name, other bytes
    assert load_benchmark(llava_config(llava))[0].fingerprint() != train.fingerprint()
