"""Exact parity with lmms-eval 0.7.3's own metric code: for the same generations, `trials.metrics` gives
the same scores (==, no tolerance) for VQAv2, TextVQA, VizWiz, GQA, DocVQA (ANLS), POPE, MMBench
(judge-free, circular) and ScienceQA, on a few hundred tricky answer strings written here.

lmms-eval's full install pulls ~150 packages (2.4 GB: wandb, opencv, torchvision, ...) and on these
machines its torchvision does not even load, so CI installs it without dependencies
(`pip install --no-deps lmms-eval==0.7.3 loguru==0.7.3`, in .ci/run). The scoring modules are then
imported unmodified; two package-level modules that only index tasks or register metrics (and would
import torch, datasets, accelerate) are replaced while importing, as is sacrebleu (BLEU only) when absent:
- `lmms_eval.tasks` (its __init__ builds the TaskManager): an empty package over the real directory;
- `lmms_eval.api.registry`: `register_metric` / `register_aggregation` that return the function
  undecorated, as the real ones do.
lmms-eval's `ConfigurableTask.process_results` strips every generation before a task scores it; `_given`
below does the same.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import random
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from trials.metrics import (
    anls,
    choice_accuracy,
    circular_accuracy,
    gqa_accuracy,
    mean,
    mmbench_option,
    normalize_answer,
    normalize_vqav2_answer,
    option_letter,
    pope_label,
    pope_metrics,
    scienceqa_option,
    textvqa_accuracy,
    vizwiz_vqa_accuracy,
    vqav2_accuracy,
)
from trials.metrics import vqa as vqa_module

INSTALL = "pip install --no-deps lmms-eval==0.7.3 loguru==0.7.3"
pytest.importorskip("lmms_eval", reason=f"lmms-eval absent: {INSTALL}")
pytest.importorskip("loguru", reason=f"lmms-eval's task code logs with loguru: {INSTALL}")
pd = pytest.importorskip("pandas")  # MMBench's evaluator works on a DataFrame

LMMS_EVAL_VERSION = "0.7.3"

# ---- tricky answers: each group holds spellings a scorer may or may not make equal ---------------------
GROUPS: list[tuple[str, ...]] = [
    ("yes", "Yes", "YES", "yes.", "Yes!", " yes ", "yes\n", "\tyes", "Yes, it is.", "yes yes", "ye s"),
    ("no", "No", "no.", "NO!", "No,", "nope", "No.\n", "no way", "not", "No\t"),
    ("2", "two", "Two", "TWO.", "2.", " 2 ", "two dogs", "2 dogs", "2.0", "II", "2nd"),
    ("10", "ten", "Ten.", "10.", "10,", "1 0", "tenth", "10!"),
    ("0", "zero", "none", "None.", "nothing", "0.", "Zero", "0,0"),
    ("1000", "1,000", "1 000", "1.000", "one thousand", "1,000.", "1,,000", "$1,000", "1,000,000"),
    ("3.5", "3.50", "3,5", "3. 5", "three point five", "3.5.", ".5", "3..5", "3.5 m", "3.5%"),
    ("don't", "dont", "Dont", "DON'T", "do not", "don t", "don`t", "don\u2019t", "dont."),
    ("isn't", "isnt", "Isnt", "is not", "isn't.", "ISNT!", "isnt?"),
    ("can't", "cant", "cannot", "can not", "Can't.", "CANT"),
    ("it's", "its", "it is", "It's", "it 's", "IT'S", "itd", "itll"),
    ("o'clock", "oclock", "3 o'clock", "3 oclock", "3:00", "3 O'Clock", "3:00 pm", "12:30"),
    ("the dog", "dog", "a dog", "A Dog", "an dog", "dogs", "the the dog", "Dog.", "thedog"),
    ("an apple", "apple", "Apple", "the apple", "apples", "a apple", "An Apple!"),
    ("black and white", "black & white", "black-and-white", "black/white", "Black And White",
     "black and white.", "black, white", "black - white", "black -white", "black_and_white"),
    ("t-shirt", "t shirt", "tshirt", "T-Shirt", "t - shirt", "t_shirt", "t-shirt."),
    ("left", "Left.", "to the left", "left side", "on the left", "LEFT!!!", "left\n\nside"),
    ("red", "Red", "red.", "redd", "reddish", "red?", "(red)", "[red]", "{red}", '"red"', "<red>", "`red`"),
    ("man's", "mans", "man s", "Man's hat", "men's", "mans hat"),
    ("he's", "hes", "he is", "let's", "lets", "somebody'd", "somebodyd", "y'all", "yall", "yall'll"),
    ("a", "an", "the", "A", "The End", "an an", "a.", "the."),
    ("", " ", "?", "!!!", "...", ".", "-", "()", ",", ", ,", "\n", "\t\t"),
    ("1/2", "1 / 2", "half", "0.5", "½", "1:2", "50%", "3+4", "=", "a=b"),
    ("$5", "5$", "5 dollars", "five dollars", "$5.00", "5.00", "USD 5"),
    ("100 m", "100m", "100 meters", "one hundred", "4'5\"", "6 ft", "6ft."),
    ("café", "Café", "cafe", "CAFÉ", "naïve", "naive", "Straße", "STRASSE", "strasse"),
    ("istanbul", "İstanbul", "ISTANBUL", "ΟΔΟΣ", "οδος", "ὈΔΌΣ", "日本", "日本。", "🐶", "dog 🐶"),
    ("yes no", "yes\u00a0no", "\u2003yes", "ye\u200bs", "ｙｅｓ", "yes\r\nno", "yes\x0bno", "yes\x00"),
    ("3", "٣", "١,٢", "1,2", "12", "1, 2", "1 ,2", "3³", "²"),
    ("a." * 20, "." * 40, "1. " * 5, "a.b.c.d", "U.S.A.", "usa", "e.g.", "Mr. Smith", "mr smith"),
    ("hot dog", "hotdog", "hot-dog", "Hot Dog", "hot dogs", "hot  dog", "hot\tdog", "hot\ndog"),
    ("frisbee", "frizbee", "Frisbee.", "a frisbee", "frisbees", "flying disc", "fris-bee"),
]
WORDS = [word for group in GROUPS for word in group]
DISTRACTORS = ["cat", "blue", "3", "no", "yes", "tennis", "kitchen", "left", "2", "none", "white", "dog"]


def _references(index: int, group: tuple[str, ...]) -> list[str]:
    """Ten annotators: `index % 11` of them drawn from the group's spellings, the rest distractors."""
    own = index % 11
    answers = [group[(index + j) % len(group)] for j in range(own)]
    answers += [DISTRACTORS[(index + j) % len(DISTRACTORS)] for j in range(10 - own)]
    random.Random(index).shuffle(answers)
    return answers


VQA_CASES = [(word, _references(i, group)) for i, (group, word) in
             enumerate((group, word) for group in GROUPS for word in group)]
VQA_CASES += [(word, [word.upper()] * 3 + [word] * 7) for word in WORDS[::7]]


@pytest.fixture(scope="module")
def lmms() -> SimpleNamespace:
    """lmms-eval's scoring modules, imported from the installed package as described above; the
    replacement modules leave sys.modules once the imports are done."""
    import lmms_eval

    assert importlib.metadata.version("lmms-eval") == LMMS_EVAL_VERSION, "parity is pinned to one release"
    tasks = ModuleType("lmms_eval.tasks")
    tasks.__path__ = [str(Path(lmms_eval.__file__).parent / "tasks")]
    registry = ModuleType("lmms_eval.api.registry")
    registry.register_metric = lambda **_: (lambda fn: fn)
    registry.register_aggregation = lambda _name: (lambda fn: fn)
    stubs = {"lmms_eval.tasks": tasks, "lmms_eval.api.registry": registry}
    if importlib.util.find_spec("sacrebleu") is None:
        stubs["sacrebleu"] = ModuleType("sacrebleu")
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        def load(name: str) -> ModuleType:
            return importlib.import_module(f"lmms_eval.{name}")

        return SimpleNamespace(
            processor=load("tasks._task_utils.vqa_eval_metric").EvalAIAnswerProcessor,
            vqav2=load("tasks.vqav2.utils"), textvqa=load("tasks.textvqa.utils"),
            vizwiz=load("tasks.vizwiz_vqa.utils"), pope=load("tasks.pope.utils"),
            sqa=load("tasks.scienceqa.utils"), metrics=load("api.metrics"),
            mcq=load("tasks._task_utils.mcq_extract"),
            mmbench=load("tasks.mmbench.mmbench_evals").MMBench_Evaluator(),
        )
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _given(text: str) -> list[str]:
    """The results list a task's process_results receives: ConfigurableTask strips each generation."""
    return [text.strip()]


def test_tables_are_lmms_evals(lmms: SimpleNamespace) -> None:
    processor = lmms.processor
    assert processor.CONTRACTIONS == vqa_module._CONTRACTIONS
    assert tuple(processor.PUNCTUATIONS) == vqa_module._PUNCTUATION
    assert set(processor.ARTICLES) == vqa_module._ARTICLES
    # NUMBER_MAP grows (setdefault) as lmms-eval normalises; its own entries are the ones that map elsewhere
    assert {k: v for k, v in processor.NUMBER_MAP.items() if k != v} == vqa_module._NUMBERS


def test_enough_cases() -> None:
    assert len(WORDS) >= 200 and len(VQA_CASES) >= 200


def test_normalize_answer(lmms: SimpleNamespace) -> None:
    processor = lmms.processor()
    for word in WORDS + [reference for _, references in VQA_CASES for reference in references]:
        assert normalize_answer(word) == processor(word), word
        expected = processor.process_digit_article(processor.process_punctuation(
            word.replace("\n", " ").replace("\t", " ").strip()))
        assert normalize_vqav2_answer(word) == expected, word


def test_vqa_accuracy(lmms: SimpleNamespace) -> None:
    for i, (prediction, answers) in enumerate(VQA_CASES):
        # the tasks normalise doc["answers"] in place: each gets its own copy
        expected = lmms.textvqa.textvqa_process_results({"question_id": i, "answers": list(answers)},
                                                        _given(prediction))["exact_match"]
        assert textvqa_accuracy(prediction, answers) == expected, (prediction, answers)
        expected = lmms.vizwiz.vizwiz_vqa_process_results({"question_id": i, "answers": list(answers)},
                                                          _given(prediction))["exact_match"]
        assert vizwiz_vqa_accuracy(prediction, answers) == expected, (prediction, answers)
        records = [{"answer": a, "answer_confidence": "yes", "answer_id": j} for j, a in enumerate(answers)]
        doc = {"question_id": i, "answers": records}
        expected = lmms.vqav2.vqav2_process_results(doc, _given(prediction))["exact_match"]
        assert vqav2_accuracy(prediction, answers) == expected, (prediction, answers)


def test_vqa_without_answers(lmms: SimpleNamespace) -> None:
    """lmms-eval's vizwiz scores no answers 0 (as vlmsearch does); its textvqa and vqav2 raise."""
    empty = {"question_id": 0, "answers": []}
    assert lmms.vizwiz.vizwiz_vqa_process_results(empty, ["yes"])["exact_match"] == 0
    assert vizwiz_vqa_accuracy("yes", []) == textvqa_accuracy("yes", []) == 0
    with pytest.raises(statistics.StatisticsError):
        lmms.textvqa.textvqa_process_results({"question_id": 0, "answers": []}, ["yes"])


def test_vqa_benchmarks_differ(lmms: SimpleNamespace) -> None:
    """Where the two normalisations part, lmms-eval's benchmarks part too (checked, not assumed)."""
    answers = ["yes no"] * 10
    assert vqav2_accuracy("yes,no", answers) == 1.0 and textvqa_accuracy("yes,no", answers) == 0.0
    doc = {"question_id": 0, "answers": [{"answer": a, "answer_id": j} for j, a in enumerate(answers)]}
    assert lmms.vqav2.vqav2_process_results(doc, ["yes,no"])["exact_match"] == 1.0
    assert lmms.textvqa.textvqa_process_results({"question_id": 0, "answers": answers}, ["yes,no"])[
        "exact_match"] == 0.0


def _gqa_pairs() -> list[tuple[str, str]]:
    return [(word, group[k]) for group in GROUPS for word in group for k in (0, len(group) // 2)]


def test_gqa(lmms: SimpleNamespace) -> None:
    pairs = [*_gqa_pairs(), ("İstanbul", "i̇stanbul"), ("İİ", "i̇"), ("a\x00", "a"), ("\x00", ""),
             ("A\x00!", "a")]
    for prediction, answer in pairs:
        expected = lmms.metrics.exact_match_hf_evaluate(
            predictions=_given(prediction), references=[answer], ignore_case=True, ignore_punctuation=True)
        assert gqa_accuracy(prediction, answer) == expected["exact_match"], (prediction, answer)


DOCVQA = ["$1,234.00", "1234", "12/05/1998", "12-05-1998", "Dr. John Smith", "john smith", "JOHN  SMITH ",
          "ß", "SS", "ﬁve", "FIVE", "İ", "Total:", "total", "N/A", "", "  ", "R&D", "r & d", "10 %", "10%"]


def test_anls(lmms: SimpleNamespace) -> None:
    cases = [(word, [group[0], group[-1]]) for group in GROUPS for word in group]
    cases += [(word, list(group)) for group in GROUPS[::3] for word in group[:3]]
    cases += [(a, [b]) for a in DOCVQA for b in DOCVQA]
    for threshold in (0.5, 0.0, 0.8):
        for prediction, answers in cases:
            expected = lmms.metrics.anls(references=answers, predictions=_given(prediction),
                                         thresh_hold=threshold)
            assert anls(prediction, answers, threshold) == expected["anls"], (prediction, answers, threshold)


def test_levenshtein_is_lmms_evals(lmms: SimpleNamespace) -> None:
    from trials.metrics import levenshtein

    for a in DOCVQA + WORDS[::5]:
        for b in DOCVQA:
            assert levenshtein(a, b) == lmms.metrics.levenshtein_distance(a, b)


YES_NO = ["yes", "no", "Yes", "No", "YES", "NO", "yes.", "No.", " yes ", "no\n", "Yes, there is a dog.",
          "No, there is not.", "There is no dog.", "", "nope", "yeah", "yes yes", "Not sure", "y", "n",
          "\tno"]


def _pope_sequences() -> list[tuple[list[str], list[str]]]:
    chance = random.Random(7)
    sequences = []
    for n in [1, 2, 3, 5, 8, 13, 21, 40] * 5:
        labels = [chance.choice(["yes", "no", "Yes", " no"]) for _ in range(n)]
        sequences.append(([chance.choice(YES_NO) for _ in range(n)], labels))
    sequences += [(["maybe"] * 4, ["yes", "no", "yes", "no"]), (["no"] * 4, ["no"] * 4),
                  (["yes"] * 3, ["yes"] * 3), (["no"] * 3, ["yes"] * 3),
                  (YES_NO, [*(["yes", "no"] * 10), "no"])]
    return sequences


def test_pope(lmms: SimpleNamespace) -> None:
    pope = lmms.pope
    aggregate = {"accuracy": pope.pope_aggregate_accuracy, "precision": pope.pope_aggregate_precision,
                 "recall": pope.pope_aggregate_recall, "f1": pope.pope_aggregate_f1_score,
                 "yes_ratio": pope.pope_aggregate_yes_ratio}
    for predictions, labels in _pope_sequences():
        rows = [pope.pope_process_results({"question_id": i, "answer": label}, _given(text))["pope_accuracy"]
                for i, (text, label) in enumerate(zip(predictions, labels, strict=True))]
        assert [pope_label(text) for text in predictions] == [row["prediction"] for row in rows]
        expected = {name: fn(rows) for name, fn in aggregate.items()}
        ours = pope_metrics(predictions, labels)
        assert {k: v for k, v in ours.items() if k != "answered_yes"} == expected, (predictions, labels)
        assert ours["answered_yes"] == [r["prediction"] for r in rows].count("yes") / len(rows)  # POPE's own


OPTION_SETS = [
    {"A": "cat", "B": "dog", "C": "bird", "D": "fish"},
    {"A": "yes", "B": "no"},
    {"A": "A cat", "B": "A dog", "C": "Both"},
    {"A": "1", "B": "2", "C": "10", "D": "12"},
]
MC_ANSWERS = [
    "A", "B", "C", "D", "E", "a", "b", "(A)", "(B).", "B.", "B)", "C:", ":D", "B,", "(C)", "[D]",
    "The answer is B.", "the answer is c", "Answer: C", "answer: (D)", "A cat", "A cat is on the mat",
    "I think A", "A or B", "A B", "Option B", "B. dog", "B. Dog", "cat", "Cat", "dog and cat",
    "none of them", "", " ", "\n", "I choose D", "My answer is (C).", "C\n", " B ", "BB", "AB",
    "Failed to obtain answer via API", "정답은 B", "答案是C", "It is D.", "D) fish", "(e)", "A. B. C.",
    "b.", "Z.", "É.", "12", "10", "2", "Both", "both A and B", "fish.", "The correct option is (A)",
    "A is wrong, B is right", "Choice: B", "B: dog", "dog (B)", "a dog", "A dog.", "ABCD", "Yes", "no.",
    "A dog is on the mat", "A bird sat on a fish", '",B is wrong; C"', "'(A)', not B.", "...D!?",
]


def _lmms_mmbench_letter(lmms: SimpleNamespace, text: str, options: dict[str, str]) -> str | None:
    """What MMBench_Evaluator.eval_sub_data reads from one row with the static method."""
    row = {letter: options.get(letter) for letter in "ABCD"}
    choices = lmms.mmbench.build_choices(row)
    letter = lmms.mmbench.can_infer(text.strip(), choices)
    return letter or lmms.mcq.extract_mcq_answer(text.strip(), choices=sorted(choices)) or None


def test_mmbench_letters(lmms: SimpleNamespace) -> None:
    for options in OPTION_SETS:
        for text in MC_ANSWERS:
            assert mmbench_option(text, options) == _lmms_mmbench_letter(lmms, text, options), (text, options)
            expected = (lmms.mmbench.can_infer(text.strip(), dict(options))
                        or lmms.mcq.extract_mcq_answer(text.strip(), choices=list("ABCDE")) or None)
            assert option_letter(text, "ABCDE", options) == expected, (text, options)


def _rotations(question: int) -> Iterator[tuple[dict[str, str], str, str]]:
    """MMBench's circular rows for one question: (options, answer letter, generation) per rotation."""
    options = OPTION_SETS[question % len(OPTION_SETS)]
    texts = list(options.values())
    right = question % len(texts)
    for shift in range(len(texts)):
        turned = texts[shift:] + texts[:shift]
        letters = "ABCD"[: len(turned)]
        answer = letters[turned.index(texts[right])]
        forms = [answer, f"({answer})", texts[right], f"The answer is {answer}.",
                 MC_ANSWERS[(question * 7 + shift) % len(MC_ANSWERS)]]
        generation = forms[(question // 4 + (shift if question % 3 == 0 else 0)) % len(forms)]
        yield dict(zip(letters, turned, strict=True)), answer, generation


def test_mmbench_circular(lmms: SimpleNamespace) -> None:
    rows, groups, correct = [], [], []
    for question in range(60):
        for shift, (options, answer, generation) in enumerate(_rotations(question)):
            index = question + shift * 1_000_000
            rows.append({"index": index, "question": "q", "answer": answer, "prediction": generation.strip(),
                         "hint": None, "source": "s", "split": "dev", "category": "c", "L2-category": "l2",
                         **{letter: options.get(letter) for letter in "ABCDE"}})
            groups.append(question)
            correct.append(mmbench_option(generation, options) == answer)
    overall, _, _ = lmms.mmbench.eval_result(rows, eval_method="static")
    assert 0 < circular_accuracy(groups, correct) < 1
    assert circular_accuracy(groups, correct) == overall


def test_scienceqa(lmms: SimpleNamespace) -> None:
    scores, predicted, answers = [], [], []
    for n in range(2, 6):
        letters = [chr(ord("A") + i) for i in range(n)]
        for answer in range(n):
            for text in MC_ANSWERS:
                doc = {"choices": [f"choice {i}" for i in range(n)], "answer": answer}
                expected = lmms.sqa.sqa_process_results(doc, _given(text))["exact_match"]
                letter = scienceqa_option(text, letters)
                assert float(letter == letters[answer]) == expected, (text, n, answer)
                scores.append(expected)
                predicted.append(letter)
                answers.append(letters[answer])
    assert choice_accuracy(predicted, answers) == lmms.metrics.mean(scores) == mean(scores)


def test_mean(lmms: SimpleNamespace) -> None:
    values = [vqav2_accuracy(p, a) for p, a in VQA_CASES]
    assert mean(values) == lmms.metrics.mean(values)
