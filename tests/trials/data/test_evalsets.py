"""Eval sets in their released formats: every format loads (counts, prompts, choices, limit), scores
hand-checked predictions as the metrics say, groups MMBench's rotations, keeps images lazy (files or
encoded bytes), and reports broken files as DataError naming the file, the problem and the layout."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from search_space.eval_formats import EVAL_FORMATS, LETTER, SHORT, EvalSpec
from tests import evalfiles
from trials.data.base import EVAL_LOADERS, EvalSet
from trials.data.evalsets import check_evalsets, load_evalset
from trials.data.images import ImageFiles, decode, file_digest
from trials.data.llava import DataError

COUNTS = {"vqav2": 6, "textvqa": 6, "vizwiz": 6, "gqa": 6, "pope": 8, "mmbench": 4 + 3 + 2, "scienceqa": 4,
          "docvqa": 4}
LIMITED = {"mmbench": 4 + 3}   # limit 2: MMBench's first two questions, each with all its rotations
PRIMARY = {"docvqa": "anls"}   # the metric a perfect answer gives 1.0 in; else accuracy


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One small set of every format (read-only: tests that break files write their own)."""
    return {entry["format"]: entry for entry in evalfiles.write_all(tmp_path_factory.mktemp("evalsets"))}


def load(entry: dict[str, Any], size: int = 16, pad: tuple[int, int, int] | None = None, **over: Any
         ) -> EvalSet:
    return load_evalset(EvalSpec(**{**entry, **over}), size, pad)


def test_every_format_has_a_loader() -> None:
    assert set(EVAL_LOADERS.names()) == set(EVAL_FORMATS.names())


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_each_format_loads_lazily_and_scores_its_references_perfectly(entries: dict, name: str) -> None:
    evalset = load(entries[name])
    qa, n = evalset.qa, COUNTS[name]
    assert len(qa) == n and qa.name == name and len(qa.skills) == n and all(qa.skills)
    assert isinstance(qa.images, ImageFiles) and qa.images[:].shape == (n, 3, 16, 16)
    assert all(q.endswith("\n" + evalset.spec.suffix()) and "<image>" not in q for q in qa.questions)
    likelihood = evalset.spec.answering() == "likelihood"
    assert (evalset.choices is not None) == likelihood
    predictions = list(qa.answers)
    assert evalset.score(predictions)[PRIMARY.get(name, "accuracy")] == pytest.approx(1.0)
    assert set(evalset.score(predictions)) == set(EVAL_FORMATS.get(name).metrics)
    with pytest.raises(ValueError, match=f"has {n} questions, got {n - 1}"):
        evalset.score(predictions[:-1])
    first = load(entries[name], limit=2)
    assert first.qa.questions == qa.questions[:LIMITED.get(name, 2)]
    assert first.qa.fingerprint() == qa.subset(range(LIMITED.get(name, 2))).fingerprint()


def test_vqa_prompts_and_soft_accuracy(entries: dict) -> None:
    vqav2 = load(entries["vqav2"])
    assert vqav2.qa.questions[0] == f"What is shown in part 0?\n{SHORT}"
    assert vqav2.qa.skills[:3] == ["other", "number", "yes/no"]
    assert vqav2.qa.answers[:3] == ["red", "2", "yes"]
    assert vqav2.qa.images.files[0] == vqav2.qa.images.files[1]          # two questions per image
    # 1 of 10 annotators -> 0.3; 2 of 10 -> 0.6; normalisation ("Yes", "red."); wrong -> 0
    assert vqav2.score(["odd0", "alt1", "Yes", "red.", "nothing", "2"])["accuracy"] == pytest.approx(2.9 / 6)
    textvqa = load(entries["textvqa"])
    assert textvqa.score(["RED", "two", "yes", "odd3", "x", "x"])["accuracy"] == pytest.approx(3.3 / 6)
    vizwiz = load(entries["vizwiz"])
    assert vizwiz.qa.questions[0] == ("What is this 0?\nWhen the provided information is insufficient, "
                                      f"respond with 'Unanswerable'.\n{SHORT}")
    assert load(entries["vizwiz"], prompt="Say it.").qa.questions[0] == "What is this 0?\nSay it."
    assert vizwiz.score(["alt0"] + ["-"] * 5)["accuracy"] == pytest.approx(0.1)


def test_gqa_docvqa_pope_scores(entries: dict) -> None:
    gqa = load(entries["gqa"])
    assert gqa.qa.skills[:3] == ["query", "verify", "logical"]
    assert gqa.score(["Left.", "yes", "yes", "left", "no", "no"])["accuracy"] == pytest.approx(4 / 6)
    docvqa = load(entries["docvqa"])
    assert docvqa.qa.skills == ["form"] * 4
    # one edit in 12 characters -> 11/12; "inv. 1001" is the second reference exactly
    assert docvqa.score(["invoice 1001", "inv. 1001", "INVOICE 1002", "nothing"])["anls"] == pytest.approx(
        (11 / 12 + 1 + 1 + 0) / 4)
    pope = load(entries["pope"])
    assert pope.qa.questions[0] == f"Is there a dog in the image?\n{SHORT}"
    assert pope.qa.answers == [evalfiles.pope_label(i) for i in range(8)]
    scores = pope.score(["yes"] * 8)
    assert scores == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                    "yes_ratio": 0.5, "answered_yes": 1.0})
    by_likelihood = load(entries["pope"], answer_by="likelihood")
    assert by_likelihood.choices == [("yes", "no")] * 8


def test_pope_reads_a_json_list_and_lmms_eval_categories(tmp_path: Path) -> None:
    pope = load(evalfiles.write_pope(tmp_path, n=4, category="adversarial", as_list=True))
    assert len(pope.qa) == 4 and pope.qa.skills == ["adversarial"] * 4


def test_mmbench_rotations_prompts_and_circular_score(entries: dict, tmp_path: Path) -> None:
    mmbench = load(entries["mmbench"])
    qa = mmbench.qa
    assert qa.questions[0] == (f"Hint 0.\nWhich part is shown in 0?\nA. option 0a\nB. option 0b\n"
                               f"C. option 0c\nD. option 0d\n{LETTER}")
    assert qa.questions[1].startswith("Hint 0.\nWhich part is shown in 0?\nA. option 0b\nB. option 0c\n")
    assert qa.questions[4] == f'Which "part"\nis shown?\nA. option 1a\nB. option 1b\nC. option 1c\n{LETTER}'
    assert qa.answers[:4] == ["A", "D", "C", "B"]                         # the right option, rotated
    assert mmbench.choices == [tuple("ABCD")] * 4 + [tuple("ABC")] * 3 + [tuple("AB")] * 2
    assert qa.skills[:4] == ["category_0"] * 4 and qa.skills[4] == "category_1"
    files = qa.images.files
    assert isinstance(files[0], bytes) and files[0] is files[3]         # encoded, one object per image
    assert files[0] is not files[4]
    wrong = list(qa.answers)
    wrong[1] = "A"                                                       # one rotation of question 0 wrong
    assert mmbench.score(wrong)["accuracy"] == pytest.approx(2 / 3)
    assert mmbench.score(["The answer is " + a for a in qa.answers])["accuracy"] == pytest.approx(1.0)
    circular = load(evalfiles.write_mmbench(tmp_path, circular=True))   # rotated copies already there
    assert circular.qa.questions == qa.questions and circular.qa.answers == qa.answers
    assert circular.qa.fingerprint() == qa.fingerprint() and circular.score(wrong) == mmbench.score(wrong)
    assert load(evalfiles.write_mmbench(tmp_path, circular=True), limit=1).qa.questions == qa.questions[:4]
    generated = load(entries["mmbench"], answer_by="generate")
    assert generated.choices is None


def test_scienceqa_takes_the_image_questions_of_the_split(entries: dict, tmp_path: Path) -> None:
    sqa = load(entries["scienceqa"])
    assert sqa.qa.questions[0] == f"Which choice fits 0?\nA. choice 0a\nB. choice 0b\n{LETTER}"
    assert sqa.qa.questions[1] == (f"Context: Look at picture 1.\nWhich choice fits 1?\nA. choice 1a\n"
                                   f"B. choice 1b\nC. choice 1c\n{LETTER}")
    assert sqa.qa.answers == ["A", "B", "C", "B"]
    assert sqa.qa.skills[:2] == ["natural science", "social science"]
    assert sqa.choices == [tuple("AB"), tuple("ABC"), tuple("ABCD"), tuple("AB")]
    assert sqa.score(["A", "B. choice 1b", "c", "A"])["accuracy"] == pytest.approx(0.75)
    val = load(evalfiles.write_scienceqa(tmp_path, n=2, split="val"))
    assert len(val.qa) == 2
    with pytest.raises(DataError, match="no problem of split 'minival'"):
        load(entries["scienceqa"], split="minival")


def test_images_decode_padded_and_bytes_hash_like_files(entries: dict, tmp_path: Path) -> None:
    padded = load(entries["vqav2"], size=24, pad=(255, 0, 0))
    assert padded.qa.images[0][:, 0, 12].tolist() == [255, 0, 0]     # 12x10 image, red bars above/below
    file = Path(padded.qa.images.files[0])
    data = file.read_bytes()
    assert torch.equal(ImageFiles([data], 24, (255, 0, 0))[0], padded.qa.images[0])
    assert np.array_equal(decode(data, 8), decode(file, 8))
    digests = []
    for images in (ImageFiles([file, None], 8), ImageFiles([data, None], 8)):
        digest = hashlib.sha256()
        images.update_digest(digest)
        digests.append(digest.hexdigest())
    unchanged = hashlib.sha256(b"files@8\0" + file_digest(file) + b"none\0").hexdigest()
    assert digests == [unchanged, unchanged]                           # file entries hash as before


# ---- broken files -----------------------------------------------------------------------------


def rewrite_json(path: str, change: Any) -> None:
    file = Path(path)
    file.write_text(json.dumps(change(json.loads(file.read_text()))))


def fails(entry: dict[str, Any], *patterns: str, **over: Any) -> str:
    """The DataError's message, which must match every pattern and name the format's layout."""
    with pytest.raises(DataError) as caught:
        load(entry, **over)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, message
    assert EVAL_FORMATS.get(entry["format"]).layout in message
    return message


def test_not_json_and_wrong_shapes(tmp_path: Path) -> None:
    vqav2 = evalfiles.write_vqav2(tmp_path / "vqav2")
    Path(vqav2["questions"]).write_text("not json {")
    fails(vqav2, "questions file", "is not valid JSON")
    textvqa = evalfiles.write_textvqa(tmp_path / "textvqa")
    rewrite_json(textvqa["path"], lambda raw: raw["data"])
    fails(textvqa, "has no questions (a list under 'data')", "it holds a JSON list")
    vizwiz = evalfiles.write_vizwiz(tmp_path / "vizwiz")
    rewrite_json(vizwiz["path"], lambda raw: {"annotations": raw})
    fails(vizwiz, "it holds a JSON object with keys 'annotations'")
    gqa = evalfiles.write_gqa(tmp_path / "gqa")
    rewrite_json(gqa["path"], lambda raw: list(raw.values()))
    fails(gqa, "has no questions (an object of question_id -> question)", "a JSON list")
    docvqa = evalfiles.write_docvqa(tmp_path / "docvqa")
    rewrite_json(docvqa["path"], lambda raw: {**raw, "data": []})
    fails(docvqa, "its 'data' is empty or not a list")


def test_missing_fields_are_listed_record_by_record(tmp_path: Path) -> None:
    gqa = evalfiles.write_gqa(tmp_path / "gqa", n=14)
    rewrite_json(gqa["path"], lambda raw: {qid: {k: v for k, v in question.items() if k != "imageId"}
                                           for qid, question in raw.items()})
    message = fails(gqa, "14 question(s) of path file", "question '201307251' has no 'imageId'", "and 4 more")
    assert message.count("has no 'imageId'") == 10
    docvqa = evalfiles.write_docvqa(tmp_path / "docvqa")
    rewrite_json(docvqa["path"], lambda raw: {**raw, "data": [{**raw["data"][0], "answers": []},
                                                             *raw["data"][1:]]})
    fails(docvqa, "question #0 (questionId 49153) has 'answers' that are not a non-empty list")
    pope = evalfiles.write_pope(tmp_path / "pope")
    lines = Path(pope["path"]).read_text().splitlines()
    lines[2] = "{broken"
    lines[3] = lines[3].replace('"no"', '"maybe"')
    Path(pope["path"]).write_text("\n".join(lines))
    fails(pope, "line 3 is not JSON", "line 4 has 'label' 'maybe', not 'yes' or 'no'")
    sqa = evalfiles.write_scienceqa(tmp_path / "sqa")
    rewrite_json(sqa["path"], lambda raw: {**raw, "2": {**raw["2"], "answer": 7}})
    fails(sqa, "problem '2' has 'answer' 7, not the position of one of its 3 choices")


def test_vqav2_annotations_must_cover_the_questions(tmp_path: Path) -> None:
    vqav2 = evalfiles.write_vqav2(tmp_path)
    rewrite_json(vqav2["annotations"], lambda raw: {**raw, "annotations": raw["annotations"][:3]
                                                   + raw["annotations"][4:]})
    fails(vqav2, "has no annotation for 1 question(s) (question_id 5003)")
    assert len(load(vqav2, limit=3).qa) == 3                     # the first three are annotated
    fails({**vqav2, "annotations": str(tmp_path / "absent.json")}, "annotations file", "does not exist")


def test_limit_reads_only_the_first_records(tmp_path: Path) -> None:
    textvqa = evalfiles.write_textvqa(tmp_path)
    rewrite_json(textvqa["path"], lambda raw: {**raw, "data": [*raw["data"][:2], {"bad": 1}]})
    assert len(load(textvqa, limit=2).qa) == 2
    fails(textvqa, "question #2 has no 'question_id'")


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    vqav2 = evalfiles.write_vqav2(tmp_path / "vqav2")
    (Path(vqav2["image_folder"]) / "COCO_val2014_000000000101.jpg").unlink()
    fails(vqav2, "image 'COCO_val2014_000000000101.jpg' of question_id 5002 is missing", "check image_folder")
    fails({**vqav2, "image_folder": str(tmp_path / "nowhere")}, "is not a folder")
    sqa = evalfiles.write_scienceqa(tmp_path / "sqa")
    (Path(sqa["image_folder"]) / "test" / "3" / "image.png").write_bytes(b"not an image")
    fails(sqa, "image 'test/3/image.png' of problem '3' is unreadable")


def test_broken_mmbench_tsvs(tmp_path: Path) -> None:
    entry = evalfiles.write_mmbench(tmp_path)
    path = Path(entry["path"])
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))

    def write(table: list[list[str]]) -> None:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows(table)

    write([[c for c, name in zip(row, rows[0], strict=True) if name != "answer"] for row in rows])
    fails(entry, "has no column(s) 'answer'", "test TSV has no answers")
    rows[1][7], rows[2][9] = "E", base64.b64encode(b"not an image").decode()
    rows[3][9] = "%%%"
    write(rows)
    fails(entry, "row 2 (index 0) has 'answer' 'E', not one of its option letters A, B, C, D",
          "row 4 (index 2) has an 'image' that is not base64")
    rows[1][7], rows[3][9] = "A", rows[1][9]
    write(rows)
    fails(entry, "image 'base64' of index 1 is unreadable")


def test_likelihood_needs_closed_choices(entries: dict) -> None:
    fails(entries["gqa"], "answer_by: likelihood needs closed choices", answer_by="likelihood")


def test_check_evalsets_lists_every_broken_set(entries: dict, tmp_path: Path) -> None:
    check_evalsets([EvalSpec(**entry) for entry in entries.values()], 16)
    broken_pope = evalfiles.write_pope(tmp_path / "pope")
    Path(broken_pope["path"]).write_text("")
    specs = [EvalSpec(**entries["gqa"]), EvalSpec(**broken_pope, name="pope-random"),
             EvalSpec(**entries["docvqa"], image_folder=str(tmp_path))]
    with pytest.raises(DataError) as caught:
        check_evalsets(specs, 16)
    message = str(caught.value)
    assert message.startswith("2 of the 3 eval set(s) under data.eval cannot be used")
    assert "eval set 'pope-random'" in message and "holds no records" in message
    assert "eval set 'docvqa'" in message and "is missing" in message and "'gqa'" not in message
