"""The benchmark metrics on small hand-checked cases, and the official VQA normalisation rules on answers
whose normal form is worked out by hand (these run without lmms-eval; test_metrics_parity.py compares
with lmms-eval's own code)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trials.metrics import (
    VQA_ACCURACY,
    anls,
    choice_accuracy,
    circular_accuracy,
    gqa_accuracy,
    levenshtein,
    mean,
    mmbench_option,
    normalize_answer,
    normalize_vqav2_answer,
    option_letter,
    pope_label,
    pope_label_llava,
    pope_metrics,
    scienceqa_option,
    textvqa_accuracy,
    vqa_accuracy,
    vqav2_accuracy,
)

# (answer, EvalAI / textvqa normal form, vqav2 normal form), each worked out from the official rules
NORMAL_FORMS = [
    ("Two dogs.", "2 dogs", "2 dogs"),                      # a period not before a digit goes; two -> 2
    ("dont", "don't", "don't"),                             # the contractions table
    ("Don't", "don't", "don't"),
    ("isnt", "isn't", "isn't"),
    ("hes", "he's", "he's"),
    ("Somebody'd", "somebodyd", "somebodyd"),               # the table's own oddity
    ("1,000", "1000", "1000"),                              # EvalAI deletes ','; vqaEval: digit,digit
    ("2,5 m", "25 m", "25 m"),
    ("1, 2", "1 2", "1 2"),                                 # ',' beside a space is deleted
    ("3.5", "3.5", "3.5"),                                  # a decimal point stays
    ("3.5.", "3.5", "3.5"),
    ("The cat's toy", "cat 's toy", "cat's toy"),           # EvalAI splits "'s"; articles go
    ("it's", "it 's", "it's"),
    ("yes!", "yes", "yes"),                                 # a mark beside no space becomes a space
    ("black-and-white", "black and white", "black and white"),
    ("black - white", "black white", "black white"),        # beside a space it is deleted
    ("yes,no", "yesno", "yes no"),                          # where the two normal forms part
    ("Red?", "red", "red"),
    ("(red)", "red", "red"),
    ("x-y, z", "x y z", "x y z"),
    ("a", "", ""),
    ("An apple", "apple", "apple"),
    ("none", "0", "0"),
    ("ten", "10", "10"),
    ("eleven", "eleven", "eleven"),                         # only zero..ten become digits
    ("\tleft\nright ", "left right", "left right"),
    ("." * 40, "." * 8, "." * 8),                           # re.sub's count is re.UNICODE (32)
    ("", "", ""),
]


@pytest.mark.parametrize(("answer", "evalai", "vqav2"), NORMAL_FORMS)
def test_official_normal_forms(answer: str, evalai: str, vqav2: str) -> None:
    assert normalize_answer(answer) == evalai
    assert normalize_vqav2_answer(answer) == vqav2


def test_soft_accuracy_by_hand() -> None:
    others = ["cat"] * 10
    # 2 of 10 annotators said "dog": leaving one of those 2 out leaves 1 match (1/3), leaving one of the
    # 8 others out leaves 2 (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 18/30 = 0.6
    assert vqa_accuracy("dog", ["dog"] * 2 + others[:8]) == pytest.approx(0.6, abs=1e-15)
    # 1 of 10: (1 * 0 + 9 * 1/3) / 10 = 0.3; 3 of 10: (3 * 2/3 + 7 * 1) / 10 = 0.9; 4 of 10: 1.0
    assert vqa_accuracy("dog", ["dog", *others[:9]]) == pytest.approx(0.3, abs=1e-15)
    assert vqa_accuracy("dog", ["dog"] * 3 + others[:7]) == pytest.approx(0.9, abs=1e-15)
    assert vqa_accuracy("dog", ["dog"] * 4 + others[:6]) == 1.0
    assert vqa_accuracy("dog", others) == 0.0
    assert vqa_accuracy("Two", ["2"] * 10) == vqav2_accuracy("two.", ["Two"] * 10) == 1.0
    assert vqa_accuracy("dog", []) == vqav2_accuracy("dog", []) == 0.0


def test_vqa_registry() -> None:
    assert VQA_ACCURACY.names() == ["vqav2", "textvqa", "vizwiz_vqa"]
    assert VQA_ACCURACY.get("textvqa") is textvqa_accuracy
    assert VQA_ACCURACY.get("vqav2")("yes,no", ["yes no"] * 10) == 1.0
    with pytest.raises(KeyError, match="did you mean 'textvqa'"):
        VQA_ACCURACY.get("textvq")


def test_gqa_exact_match() -> None:
    assert gqa_accuracy(" Yes. ", "yes") == 1.0
    assert gqa_accuracy("t-shirt", "tshirt") == 1.0        # punctuation ignored
    assert gqa_accuracy("two", "2") == 0.0                 # but no number words, articles or spaces
    assert gqa_accuracy("the dog", "dog") == 0.0
    assert gqa_accuracy("left side", "left") == 0.0


def test_anls_by_hand() -> None:
    assert anls("hellp", ["hello"]) == pytest.approx(0.8)  # 1 edit in 5 characters
    assert anls("xyz", ["abc"]) == 0.0                      # 1 - 3/3 = 0, below the threshold
    assert anls("ab", ["ax"]) == 0.5                        # 1 - 1/2 is the threshold: it stays
    assert anls("ab", ["ax"], threshold=0.6) == 0.0
    assert anls("Hello World", ["hello   world "]) == 1.0  # case and runs of spaces ignored
    assert anls("cat", ["dog", "cat"]) == 1.0               # the best reference counts
    assert anls("", [""]) == 1.0
    assert anls("x", []) == 0.0
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3


def test_pope_counts() -> None:
    predictions = ["yes", "Yes", "no", "No ", "yes", "Yes."]
    labels = ["yes", "no", "yes", "no", "yes", "yes"]
    # said yes: rows 0, 1, 4 (row 5 "yes." is neither yes nor no): TP = 2 (0, 4), FP = 1 (1);
    # said no: rows 2, 3: FN = 1 (2). Right: rows 0, 3, 4 of 6. Labels yes: 4 of 6.
    metrics = pope_metrics(predictions, labels)
    assert metrics == pytest.approx({"accuracy": 0.5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
                                     "yes_ratio": 4 / 6, "answered_yes": 3 / 6})
    assert [pope_label(text) for text in predictions] == ["yes", "yes", "no", "no", "yes", "yes."]


def test_pope_zero_division() -> None:
    assert pope_metrics(["maybe", "hmm"], ["yes", "no"]) == {
        "accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.5, "answered_yes": 0.0}
    assert pope_metrics(["no", "no"], ["no", "no"])["precision"] == 0.0
    assert pope_metrics([], []) == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                    "yes_ratio": 0.0, "answered_yes": 0.0}
    with pytest.raises(ValueError, match="labels"):
        pope_metrics(["yes"], [])
    with pytest.raises(ValueError, match="'maybe'"):
        pope_metrics(["yes"], ["maybe"])


def test_pope_label_llava() -> None:
    assert pope_label_llava("Yes, there is a dog.") == "yes"
    assert pope_label_llava("There is no dog.") == "no"
    assert pope_label_llava("No.") == "no"
    assert pope_label_llava("I do not see one. No wait, yes.") == "no"  # the first sentence only
    assert pope_label_llava("Not sure") == "yes"                       # "Not" is not in its word list


def test_option_letters() -> None:
    options = {"A": "cat", "B": "dog", "C": "bird"}
    assert option_letter("B", "ABC") == "B"
    assert option_letter("The answer is (C).", "ABC") == "C"
    assert option_letter("a dog", "ABC", options) == "B"       # the one option text it contains
    assert option_letter("a dog", "ABC") is None
    assert option_letter("", "ABC") is None
    assert mmbench_option("A cat", options) == "A"
    assert mmbench_option("A dog is on the mat", options) == "B"  # "A" may be the article here
    assert mmbench_option("E", options) == "E"                   # MMBench's "none of them"
    assert scienceqa_option("b", "ABC") == "B"
    assert scienceqa_option("B. dog", "ABC") == "B"
    assert scienceqa_option("(B)", "ABC") is None
    assert scienceqa_option("The answer is B", "ABC") is None


def test_circular_accuracy() -> None:
    # question 1: one rotation wrong; 2 and 3: all right -> 2 of 3 questions
    assert circular_accuracy([1, 1, 1, 2, 2, 3], [True, True, False, True, True, True]) == 2 / 3
    assert circular_accuracy([1, 2, 1, 2], [True, True, False, True]) == 0.5  # rows in any order
    assert circular_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        circular_accuracy([1], [])


def test_choice_accuracy_and_mean() -> None:
    assert choice_accuracy(["A", None, "C"], ["A", "B", "D"]) == 1 / 3
    assert choice_accuracy([], []) == 0.0
    assert mean([1.0, 0.0, 0.5]) == 0.5
    assert mean([]) == 0.0


def test_no_torch() -> None:
    code = "import sys, trials.metrics; assert 'torch' not in sys.modules, 'trials.metrics imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
