"""Conversations encoded as real LMs' chat formats have them: Qwen2 (ChatML, no BOS), Llama-3
(header template, no pad token), the plain format; LLaVA's masking; text-only rows; truncation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search_space.point import TrialConfig
from tests.chat_models import save_llama3, save_qwen2
from trials import TrialOptions, run_trial
from trials.conversations import Conversations, text_budget
from trials.data.base import ChatDataset
from trials.vlm.chat import IGNORE, ChatFormat
from trials.vlm.lm import IMAGE_TOKEN, _pretrained, word_tokenizer
from trials.vlm.model import build_vlm

TURNS = [("human", "<image>\nwhat color is the object ?"), ("gpt", "red"),
         ("human", "and the shape ?"), ("gpt", "circle")]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_qwen2(tmp_path_factory.mktemp("qwen2"), padding_side="left")


@pytest.fixture(scope="module")
def llama3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama3(tmp_path_factory.mktemp("llama3"))


def labelled(tok, encoded) -> str:
    return tok.decode([t for t, label in zip(encoded.input_ids, encoded.labels, strict=True)
                       if label != IGNORE])


def test_qwen2_chatml_every_assistant_turn_is_labelled_and_nothing_else(qwen2: Path) -> None:
    _, tok = _pretrained(str(qwen2))
    assert tok.bos_token is None and tok.padding_side == "left"
    chat = ChatFormat(tok)
    encoded = chat.encode(TURNS)
    text = tok.decode(encoded.input_ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")  # Qwen2's default
    assert labelled(tok, encoded) == "red<|im_end|>\ncircle<|im_end|>\n"
    assert encoded.input_ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 1
    replies = [t for t, inside in zip(encoded.input_ids, encoded.content, strict=True) if inside]
    assert tok.decode(replies) == "redcircle"
    assert chat.stop_ids == {tok.convert_tokens_to_ids("<|im_end|>")}
    assert tok.decode(chat.ask("what ?")).endswith("what ?<|im_end|>\n<|im_start|>assistant\n")


def test_a_system_prompt_replaces_the_templates_default(qwen2: Path) -> None:
    _, tok = _pretrained(str(qwen2))
    text = tok.decode(ChatFormat(tok, "be brief").encode(TURNS).input_ids)
    assert text.startswith("<|im_start|>system\nbe brief<|im_end|>") and "helpful" not in text


def test_llama3_has_its_bos_and_gets_eos_as_pad(llama3: Path) -> None:
    _, tok = _pretrained(str(llama3))
    assert tok.pad_token == tok.eos_token == "<|eot_id|>"
    encoded = ChatFormat(tok).encode(TURNS)
    assert encoded.input_ids[0] == tok.bos_token_id and encoded.labels[0] == IGNORE
    assert labelled(tok, encoded).split() == ["red", "<|eot_id|>", "circle", "<|eot_id|>"]


def test_the_plain_format_of_a_tokenizer_without_a_template() -> None:
    tok = word_tokenizer()
    encoded = ChatFormat(tok).encode([("human", "what color ?"), ("gpt", "red")])
    assert tok.convert_ids_to_tokens(encoded.input_ids) == ["<s>", IMAGE_TOKEN, "what", "color", "?",
                                                            "red", "</s>"]
    assert labelled(tok, encoded) == "red </s>"
    text_only = ChatFormat(tok).encode([("human", "hi"), ("gpt", "red")], has_image=False)
    assert IMAGE_TOKEN not in tok.convert_ids_to_tokens(text_only.input_ids)


def test_truncation_cuts_from_the_right_and_keeps_the_image() -> None:
    chat = ChatFormat(word_tokenizer())
    long = [("human", "what color ? " * 20), ("gpt", "red")]
    encoded = chat.encode(long, max_length=10)
    assert encoded.truncated and len(encoded.input_ids) == 10
    assert not chat.encode(long, max_length=100).truncated


def _point(source: str = "tiny-llama", **data: object) -> TrialConfig:
    return TrialConfig.model_validate({
        "data": {"benchmark": "probe", "train_size": 16, "eval_size": 8, "image_size": 32, **data},
        "language_model": {"source": source, "train": "full"},
        "experts": {"clip": {"source": "tiny-clip", "tokens": 4}},
        "train": {"steps": 2, "batch_size": 4, "lr": 1e-3}})


def test_a_text_only_row_trains_as_text_alone() -> None:
    """Its loss is the LM's own on its ids: the masked placeholder's visual tokens change nothing."""
    vlm = build_vlm(_point()).eval()
    chat = vlm.chat
    rows = [chat.encode(TURNS[:2]), chat.encode([("human", "what shape ?"), ("gpt", "circle")], False)]
    batch = vlm.pad_rows(rows, has_image=[True, False])
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with torch.no_grad():
        logits = vlm(batch["input_ids"], batch["attention_mask"], images=images,
                     has_image=batch["has_image"])
        alone = vlm.lm(input_ids=torch.tensor([rows[1].input_ids])).logits
    n = len(rows[1].input_ids)
    torch.testing.assert_close(logits[1, :n], alone[0], rtol=1e-4, atol=1e-4)


def test_conversations_count_truncated_records() -> None:
    vlm = build_vlm(_point())
    data = ChatDataset("t", torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                       [TURNS, [("human", "what ? " * 50), ("gpt", "red")]], [True, True])
    text = Conversations(data, vlm, text_budget(vlm, 30, 4))
    batch = text.batch(torch.tensor([0, 1]), torch.device("cpu"))
    assert text.truncated == 1 and batch["input_ids"].shape[1] == 27
    with pytest.raises(ValueError, match="cannot hold 40 visual tokens"):
        text_budget(vlm, 40, 40)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2", "llama3"])
def test_a_trial_trains_with_a_real_familys_lm(family: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(family)
    result = run_trial(_point(str(folder)), TrialOptions())
    assert result.status == "complete", result.failure
    assert 0 <= result.metrics["accuracy"] <= 1 and result.metrics["data/truncated"] == 0


@pytest.mark.parametrize("family", ["qwen2", "llama3", "plain"])
def test_batched_lengths_equal_the_encodings(family: str, request: pytest.FixtureRequest) -> None:
    tok = word_tokenizer() if family == "plain" else _pretrained(str(request.getfixturevalue(family)))[1]
    chat = ChatFormat(tok, "be brief")
    pairs = [(TURNS, True), ([("human", "hi there"), ("gpt", "red")], False), (TURNS[2:], True)]
    assert chat.lengths(pairs) == [len(chat.encode(t, image).input_ids) for t, image in pairs]


def test_a_template_that_renders_a_prefix_differently_is_refused() -> None:
    tok = word_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if loop.last %} end"
                         "{% endif %} | {% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(ValueError, match="prefix-consistent template"):
        ChatFormat(tok).encode(TURNS)
