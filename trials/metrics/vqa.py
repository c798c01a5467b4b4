"""VQA soft accuracy and its answer normalisation, as lmms-eval 0.7.3 scores VQAv2, TextVQA and VizWiz.

lmms-eval's `EvalAIAnswerProcessor` (tasks/_task_utils/vqa_eval_metric.py, copied from MMF, which follows
EvalAI and the official vqaEval.py) normalises answers; the benchmarks differ in which of its steps run:

- `textvqa`, `vizwiz_vqa`: the whole processor (`normalize_answer`) on the prediction and every reference.
- `vqav2`: no first step (lower-casing, deleting ',' and '?', splitting "'s"): newlines/tabs to spaces,
  strip, then the punctuation and digit/article/contraction steps (`normalize_vqav2_answer`).

The official vqaEval.py differs from both: it normalises references only by punctuation, and only when
the annotators disagree. lmms-eval (followed here) runs every step on the references every time.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence

from search_space import Registry

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
# The official table as it is, oddities kept: keys with capitals never match (words are lower-cased
# first) and "somebody'd" maps to "somebodyd".
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
# vqaEval's "(?!<=\d)(\.)(?!\d)": its "(?!<=\d)" is a lookahead that always holds, so a period goes
# unless a digit follows it ("3.5" stays, "dog." loses it).
_PERIOD = re.compile(r"\.(?!\d)")
_MAX_PERIODS = 32  # vqaEval passes re.UNICODE (== 32) as re.sub's positional `count`: at most 32 go


def _punctuation(text: str) -> str:
    """vqaEval's processPunctuation: a mark is deleted where the text has it beside a space (or has a
    digit,digit anywhere), else it becomes a space; then periods not before a digit are deleted."""
    delete = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        gone = delete or f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if gone else " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS)


def _digits_articles(text: str) -> str:
    """vqaEval's processDigitArticle: lower-case words, number words to digits, articles dropped,
    then the contractions table ("dont" -> "don't")."""
    words = (_NUMBERS.get(word, word) for word in text.lower().split())
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """EvalAI's answer normal form (lmms-eval's `EvalAIAnswerProcessor()(text)`), used by TextVQA and
    VizWiz: lower case, ',' and '?' deleted, "'s" split off, whitespace, punctuation, digits, articles."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


def normalize_vqav2_answer(text: str) -> str:
    """The normal form lmms-eval's vqav2 task scores with: vqaEval's steps without EvalAI's first one."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


def soft_accuracy(prediction: str, references: Sequence[str]) -> float:
    """min(#other annotators who gave the prediction / 3, 1), averaged exactly (`statistics.mean`, as
    lmms-eval) over leaving each annotator out; both sides already normalised. 0 without references."""
    if not references:
        return 0.0
    hits = sum(reference == prediction for reference in references)
    others = [hits - (reference == prediction) for reference in references]  # matches among the others
    return float(statistics.mean([min(1.0, matches / 3) for matches in others]))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA soft accuracy of one generated answer with EvalAI's normalisation: lmms-eval's textvqa and
    vizwiz_vqa `process_results` (which differ only where there are no answers: textvqa raises, vizwiz
    gives 0; this gives 0)."""
    return soft_accuracy(normalize_answer(prediction.strip()), [normalize_answer(a) for a in answers])


def vqav2_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA soft accuracy as lmms-eval's vqav2 `process_results` computes it. It leaves out one answer
    record at a time; VQAv2's records differ by `answer_id`, so that is one annotator at a time."""
    normal = normalize_vqav2_answer(prediction.strip())
    return soft_accuracy(normal, [normalize_vqav2_answer(a) for a in answers])


textvqa_accuracy = vqa_accuracy
vizwiz_vqa_accuracy = vqa_accuracy

VQA_ACCURACY: Registry[Callable[[str, Sequence[str]], float]] = Registry("VQA benchmark")
VQA_ACCURACY.register("vqav2", vqav2_accuracy, "lmms-eval's vqav2: vqaEval's normalisation")
VQA_ACCURACY.register("textvqa", textvqa_accuracy, "lmms-eval's textvqa: EvalAI's normalisation")
VQA_ACCURACY.register("vizwiz_vqa", vizwiz_vqa_accuracy, "lmms-eval's vizwiz_vqa: EvalAI's normalisation")
