"""Small evaluation sets written in their released file formats (the real field names and layouts)
with tiny images, for tests. Each `write_<format>(folder, n)` writes into `folder` and returns the
`data.eval:` entry for it (an EvalSpec-shaped dict of strings); `write_all(folder)` writes one of each.

What the files hold is deterministic, so tests can hand-compute scores: question i's references are
`vqa_references(i)` (VQAv2, TextVQA, VizWiz), `gqa_answer(i)`, `pope_label(i)`, `docvqa_answers(i)`;
multiple-choice questions' right letters are the loaded set's `qa.answers`.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

MAIN_ANSWERS = ("red", "2", "yes")                  # question i's majority answer: MAIN_ANSWERS[i % 3]
ANSWER_TYPES = ("other", "number", "yes/no")        # and its VQA answer_type
GQA_TYPES = ("query", "verify", "logical")
POPE_OBJECTS = ("dog", "car", "chair", "cup")
LETTERS = "ABCD"
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
                   "source", "l2-category", "comment", "split")


# ---- contents ---------------------------------------------------------------------------------


def vqa_references(i: int) -> list[str]:
    """Question i's ten annotator answers: 7 agree on the main answer, 2 say `alt<i>`, 1 says `odd<i>`
    (soft accuracy: main 1.0, `alt<i>` 0.6, `odd<i>` 0.3, anything else 0)."""
    return [MAIN_ANSWERS[i % 3]] * 7 + [f"alt{i}"] * 2 + [f"odd{i}"]


def gqa_answer(i: int) -> str:
    return ("left", "yes", "no")[i % 3]


def pope_label(i: int) -> str:
    """Even questions' objects are present, odd ones' are not."""
    return "yes" if i % 2 == 0 else "no"


def docvqa_answers(i: int) -> list[str]:
    return [f"invoice {1000 + i}", f"inv. {1000 + i}"]


def image_bytes(i: int, fmt: str = "PNG") -> bytes:
    """A tiny image, its colour and (non-square) size set by i, encoded as `fmt`."""
    colour = ((40 * i) % 256, (90 + 70 * i) % 256, (200 - 30 * i) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (12 + 4 * (i % 3), 10), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, i: int) -> Path:
    """A tiny image file (JPEG for .jpg, else PNG), parents made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(i, "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"))
    return path


def _json(path: Path, value: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return str(path)


# ---- VQA family -------------------------------------------------------------------------------


def write_vqav2(folder: Path, n: int = 6, subtype: str = "val2014") -> dict[str, Any]:
    """v2_OpenEnded_mscoco_<subtype>_questions.json + v2_mscoco_<subtype>_annotations.json, two
    questions per COCO image under <folder>/<subtype>/COCO_<subtype>_<image_id:012d>.jpg."""
    images = folder / subtype
    questions, annotations = [], []
    for i in range(n):
        image_id, qid = 100 + i // 2, 5000 + i
        write_image(images / f"COCO_{subtype}_{image_id:012d}.jpg", i // 2)
        questions.append({"image_id": image_id, "question": f"What is shown in part {i}?",
                          "question_id": qid})
        annotations.append({
            "question_type": "what is", "multiple_choice_answer": MAIN_ANSWERS[i % 3],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                        for k, a in enumerate(vqa_references(i))],
            "image_id": image_id, "answer_type": ANSWER_TYPES[i % 3], "question_id": qid})
    meta = {"info": {"description": "VQA v2 (test copy)"}, "license": {"name": "CC BY 4.0"},
            "data_subtype": subtype}
    asked = {**meta, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}
    return {"format": "vqav2",
            "questions": _json(folder / f"v2_OpenEnded_mscoco_{subtype}_questions.json", asked),
            "annotations": _json(folder / f"v2_mscoco_{subtype}_annotations.json",
                                 {**meta, "data_type": "mscoco", "annotations": annotations}),
            "image_folder": str(images)}


def write_textvqa(folder: Path, n: int = 6) -> dict[str, Any]:
    """TextVQA_0.5.1_val.json ({'data': [...]}, ten answers each), images train_images/<image_id>.jpg."""
    data = []
    for i in range(n):
        image_id = f"{0xabc000 + i:016x}"
        write_image(folder / "train_images" / f"{image_id}.jpg", i)
        data.append({"question": f"what is written on sign {i}?", "image_id": image_id,
                     "image_classes": ["Sign"], "flickr_original_url": "", "flickr_300k_url": "",
                     "image_width": 12, "image_height": 10, "answers": vqa_references(i),
                     "question_tokens": ["what", "is", "written"], "question_id": 34602 + i,
                     "set_name": "val"})
    path = _json(folder / "TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa",
                                                     "dataset_version": "0.5.1", "data": data})
    return {"format": "textvqa", "path": path, "image_folder": str(folder / "train_images")}


def write_vizwiz(folder: Path, n: int = 6) -> dict[str, Any]:
    """VizWiz val.json (a list), images val/VizWiz_val_<i:08d>.jpg."""
    records = []
    for i in range(n):
        name = f"VizWiz_val_{i:08d}.jpg"
        write_image(folder / "val" / name, i)
        records.append({"image": name, "question": f"What is this {i}?",
                        "answers": [{"answer": a, "answer_confidence": "yes"} for a in vqa_references(i)],
                        "answer_type": ANSWER_TYPES[i % 3], "answerable": 1})
    return {"format": "vizwiz", "path": _json(folder / "val.json", records),
            "image_folder": str(folder / "val")}


# ---- GQA, POPE, DocVQA ------------------------------------------------------------------------


def write_gqa(folder: Path, n: int = 6) -> dict[str, Any]:
    """testdev_balanced_questions.json (question_id -> question), images images/<imageId>.jpg."""
    questions = {}
    for i in range(n):
        image_id = f"n{161313 + i // 2}"
        write_image(folder / "images" / f"{image_id}.jpg", i // 2)
        qid = str(201307251 + i)
        questions[qid] = {
            "semantic": [], "entailed": [], "equivalent": [qid], "question": f"Is the thing {i} on the left?",
            "imageId": image_id, "isBalanced": True, "groups": {"global": None, "local": "10c-thing"},
            "answer": gqa_answer(i), "semanticStr": "select: thing", "annotations": {"answer": {},
                                                                                       "question": {},
                                                                                       "fullAnswer": {}},
            "types": {"detailed": "positionVerify", "semantic": "rel", "structural": GQA_TYPES[i % 3]},
            "fullAnswer": f"The answer is {gqa_answer(i)}."}
    return {"format": "gqa", "path": _json(folder / "testdev_balanced_questions.json", questions),
            "image_folder": str(folder / "images")}


def write_pope(folder: Path, n: int = 8, category: str | None = None, as_list: bool = False
               ) -> dict[str, Any]:
    """coco_pope_random.json: JSON lines (`as_list`: one JSON list) of {'question_id', 'image',
    'text', 'label'} (+ lmms-eval's 'category' when given), two questions per image under val2014/."""
    records = []
    for i in range(n):
        name = f"COCO_val2014_{310196 + i // 2:012d}.jpg"
        write_image(folder / "val2014" / name, i // 2)
        record = {"question_id": i + 1, "image": name,
                  "text": f"Is there a {POPE_OBJECTS[i % 4]} in the image?", "label": pope_label(i)}
        records.append(record | ({"category": category} if category else {}))
    path = folder / "coco_pope_random.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records) if as_list else "".join(json.dumps(r) + "\n" for r in records),
                    encoding="utf-8")
    return {"format": "pope", "path": str(path), "image_folder": str(folder / "val2014")}


def write_docvqa(folder: Path, n: int = 4) -> dict[str, Any]:
    """val_v1.0.json ({'data': [...]}), images documents/<doc>.png under the file's folder."""
    data = []
    for i in range(n):
        image = f"documents/pybv{228 + i:04d}_81.png"
        write_image(folder / image, i)
        data.append({"questionId": 49153 + i, "question": f"What is the invoice number on page {i}?",
                     "question_types": ["form"], "image": image, "docId": 14465 + i,
                     "ucsf_document_id": f"pybv{228 + i:04d}", "ucsf_document_page_no": "81",
                     "answers": docvqa_answers(i), "data_split": "val"})
    return {"format": "docvqa", "path": _json(folder / "val_v1.0.json", {
        "dataset_name": "docvqa", "dataset_split": "val", "dataset_version": "1.0", "data": data})}


# ---- multiple choice --------------------------------------------------------------------------


def mmbench_options(i: int) -> list[str]:
    """Question i's options: 4, 3, 2, 4, ... of them."""
    return [f"option {i}{letter.lower()}" for letter in LETTERS[:4 - i % 3]]


def write_mmbench(folder: Path, n: int = 3, circular: bool = False) -> dict[str, Any]:
    """mmbench_dev_en_20231003.tsv: n questions (4, 3, 2, ... options; a hint on even ones; question
    1 has a quote and a newline), base64 PNG images. `circular`: also every rotation of each
    question as a copy at index rotation * 1_000_000 + index whose image cell names the original's
    index (as VLMEvalKit's circular files do)."""
    rows = []
    for i in range(n):
        options = mmbench_options(i)
        question = 'Which "part"\nis shown?' if i == 1 else f"Which part is shown in {i}?"
        rows.append([i, question, f"Hint {i}." if i % 2 == 0 else "", *options, *[""] * (4 - len(options)),
                     LETTERS[i % len(options)], f"category_{i % 2}",
                     base64.b64encode(image_bytes(i)).decode(), "test-source", "l2", "", "dev"])
    if circular:
        for i in range(n):
            options, answer = mmbench_options(i), i % len(mmbench_options(i))
            for by in range(1, len(options)):
                turned = options[by:] + options[:by]
                rows.append([by * 1_000_000 + i, rows[i][1], rows[i][2], *turned, *[""] * (4 - len(turned)),
                             LETTERS[(answer - by) % len(options)], rows[i][8], str(i), "test-source", "l2",
                             "", "dev"])
    path = folder / "mmbench_dev_en_20231003.tsv"
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(MMBENCH_COLUMNS)
        writer.writerows(rows)
    return {"format": "mmbench", "path": str(path)}


def write_scienceqa(folder: Path, n: int = 4, split: str = "test") -> dict[str, Any]:
    """problems.json: n image problems of `split` (2-4 choices; a hint on odd ones), plus a
    text-only problem of `split` and an image problem of another split (both left out when
    loading); images images/<split>/<pid>/image.png."""
    problems: dict[str, dict[str, Any]] = {}

    def problem(pid: int, i: int, which: str, image: str | None) -> None:
        choices = [f"choice {i}{letter.lower()}" for letter in LETTERS[:2 + i % 3]]
        problems[str(pid)] = {
            "question": f"Which choice fits {i}?", "choices": choices, "answer": i % len(choices),
            "hint": f"Look at picture {i}." if i % 2 else "", "image": image, "task": "closed choice",
            "grade": "grade4", "subject": ("natural science", "social science")[i % 2], "topic": "science",
            "category": "test", "skill": "test", "lecture": "", "solution": "", "split": which}
        if image:
            write_image(folder / "images" / which / str(pid) / image, i)

    for i in range(n):
        problem(i + 1, i, split, "image.png")
    problem(n + 1, n, split, None)
    problem(n + 2, n + 1, "train" if split != "train" else "val", "image.png")
    return {"format": "scienceqa", "path": _json(folder / "problems.json", problems),
            "image_folder": str(folder / "images"), "split": split}


WRITERS = {"vqav2": write_vqav2, "textvqa": write_textvqa, "vizwiz": write_vizwiz, "gqa": write_gqa,
           "pope": write_pope, "mmbench": write_mmbench, "scienceqa": write_scienceqa, "docvqa": write_docvqa}


def write_all(folder: Path) -> list[dict[str, Any]]:
    """One small set of every format, each in <folder>/<format>, in WRITERS' order."""
    return [write(folder / name) for name, write in WRITERS.items()]
