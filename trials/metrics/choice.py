"""Multiple-choice answers: which option a generation names, and MMBench's and ScienceQA's accuracies.

MMBench (lmms-eval 0.7.3, tasks/mmbench/mmbench_evals.py) reads a letter with `can_infer_option` (a
lone letter token, or one like "B." or "(C)"), then `can_infer_text` (the generation contains exactly one
option's text); when both fail, its default `gpt_eval_score` asks an LLM judge. Here, as in lmms-eval's
judge-free `mmbench_*_static` tasks, the regex extractor `extract_mcq_answer`
(tasks/_task_utils/mcq_extract.py) takes the judge's place. ScienceQA reads a letter its own way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_DEFAULT_LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H")
_MMBENCH_LETTERS = "ABCDE"  # can_infer_option always looks for A-E (E: "none of them")
# can_infer_option's (prefix, suffix) forms after a lone letter: "B.", "B,", "(B)", ":B", ...
_AFFIXES = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""),
            (":", ","), (":", "."), (":", ")"), (":", ")."))
_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is",
    "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",  # Korean, Chinese, Japanese
)
# extract_mcq_answer's forms, in the order it collects them, and their priorities (higher wins).
_FORMS = (("parentheses", "(", ")"), ("period", "", "."), ("colon", "", ":"), ("right_paren", "", ")"),
          ("space", "", " "))
_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4, "right_paren": 3,
             "space": 2, "fallback": 0}


def _letter_token(answer: str, letters: Sequence[str]) -> str | None:
    """MMBench's `can_infer_option`: exactly one letter standing alone as a word (unless it is "A" in a
    longer answer: maybe the article), else exactly one in a form like "B." or "(B)"."""
    if "Failed to obtain answer via API" in answer:
        return None
    tokens = answer.split()
    alone = [letter for letter in letters if letter in tokens]
    if len(alone) == 1 and not ("A" in tokens and len(tokens) > 3):
        return alone[0]
    for prefix, suffix in _AFFIXES:
        found = [letter for letter in letters if f"{prefix}{letter}{suffix}" in tokens]
        if len(found) == 1:
            return found[0]
    return None


def _option_text(answer: str, options: Mapping[str, str]) -> str | None:
    """MMBench's `can_infer_text`: the one option whose text (lower case) the answer contains."""
    lowered = answer.lower()
    found = [letter for letter, text in options.items() if str(text).lower() in lowered]
    return found[0] if len(found) == 1 else None


def _extracted(response: str, letters: Sequence[str]) -> str | None:
    """lmms-eval's `extract_mcq_answer`: every place a letter appears in a known form, the one in the
    highest-priority form winning (the last of them on a tie)."""
    if not response.strip():
        return None
    letters = list(letters) or list(_DEFAULT_LETTERS)
    text = response.strip()
    for char in ",.!?;:'\"":
        text = text.strip(char)
    text = f" {text} "
    found: list[tuple[str, int, str]] = []
    for form, prefix, suffix in _FORMS:
        marks = [(ch, f"{prefix}{ch}{suffix}") for ch in letters]
        found += [(ch, text.rfind(mark), form) for ch, mark in marks if mark in text]
    lowered = text.lower()
    for phrase in _PHRASES:
        at = lowered.find(phrase)
        if at != -1:
            after = at + len(phrase)
            found += [(ch, text.find(ch, after), "phrase") for ch in letters if text.find(ch, after) != -1]
    bare = text.strip()
    found += [(ch, 0, "start") for ch in letters
              if bare.startswith(ch) and (len(bare) == 1 or not bare[1].isalpha())]
    found += [(ch, len(text) - 1, "end") for ch in letters
              if bare.endswith(ch) and (len(bare) == 1 or not bare[-2].isalpha())]
    if not found:
        found = [(ch, text.rfind(ch), "fallback") for ch in letters if ch in text]
    if not found:
        return None
    found.sort(key=lambda item: (_PRIORITY[item[2]], item[1]), reverse=True)
    return found[0][0]


def option_letter(text: str, letters: Sequence[str], options: Mapping[str, str] | None = None) -> str | None:
    """The option (one of `letters`) a generated or likelihood-chosen answer names, or None: MMBench's
    rules over `letters` (a letter token, then the one option text it contains when `options` maps
    letters to texts), with lmms-eval's regex extractor where MMBench would ask an LLM judge."""
    answer = text.strip()
    return (_letter_token(answer, letters) or (_option_text(answer, options) if options else None)
            or _extracted(answer, letters))


def mmbench_option(text: str, options: Mapping[str, str]) -> str | None:
    """The letter lmms-eval's judge-free MMBench (`mmbench_*_static`) reads from a generation; `options`
    maps the question's letters (A-D) to their texts, absent options left out."""
    answer = text.strip()
    return _letter_token(answer, _MMBENCH_LETTERS) or _option_text(answer, options) or _extracted(
        answer, sorted(options))


def scienceqa_option(text: str, letters: Sequence[str]) -> str | None:
    """The letter lmms-eval's ScienceQA (`sqa_process_results`, LLaVA's rule) reads: the whole answer is
    a letter in any case, or it starts with a capital and a period ("B. the cat")."""
    answer = text.strip()
    for letter in letters:
        if answer.lower() == letter.lower():
            return letter
    if len(answer) >= 2 and answer[0].isupper() and answer[1] == ".":
        for letter in letters:
            if answer[0].lower() == letter.lower():
                return letter
    return None


def circular_accuracy(groups: Sequence[object], correct: Sequence[bool]) -> float:
    """MMBench's circular evaluation: the share of questions (`groups`, one key per row: the index
    modulo 1e6 in MMBench) whose every rotation was answered right; 0.0 for none."""
    if len(groups) != len(correct):
        raise ValueError(f"{len(groups)} group keys for {len(correct)} results")
    right: dict[object, bool] = {}
    for group, ok in zip(groups, correct, strict=True):
        right[group] = right.get(group, True) and bool(ok)
    return sum(right.values()) / len(right) if right else 0.0


def choice_accuracy(predictions: Sequence[str | None], answers: Sequence[str]) -> float:
    """The share of questions whose predicted letter (None: none read) is the answer's (ScienceQA's
    exact-match mean); 0.0 for none."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    scores = [1.0 if p is not None and p == a else 0.0 for p, a in zip(predictions, answers, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0
