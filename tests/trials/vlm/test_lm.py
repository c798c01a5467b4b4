"""The language model: the tiny-llama preset, its tokenizer, loading by directory, train modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search_space.point import LanguageModelConfig
from trials.vlm.lm import IMAGE_TOKEN, TRAIN_MODES, load_lm, save_tiny_llama, word_tokenizer


def test_word_tokenizer_round_trip() -> None:
    tok = word_tokenizer()
    ids = tok(f"What COLOR is the {IMAGE_TOKEN} object? red", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["what", "color", "is", "the", IMAGE_TOKEN, "object",
                                              "?", "red"]
    assert tok.decode(tok("zebra", add_special_tokens=False)["input_ids"]) == "<unk>"


def test_preset_is_deterministic_and_loads_back_from_a_directory(tmp_path: Path) -> None:
    a, tok = load_lm(LanguageModelConfig(train="full"))
    b, _ = load_lm(LanguageModelConfig(train="full"))
    ids = torch.tensor([tok("what color is it ?")["input_ids"]])
    assert torch.equal(a(ids).logits, b(ids).logits)
    save_tiny_llama(str(tmp_path / "lm"))
    c, tok_c = load_lm(LanguageModelConfig(source=str(tmp_path / "lm"), train="full"))
    assert torch.equal(a(ids).logits, c(ids).logits)
    assert tok_c.get_vocab() == tok.get_vocab()
    assert tok_c.convert_tokens_to_ids(IMAGE_TOKEN) == tok.convert_tokens_to_ids(IMAGE_TOKEN)


@pytest.mark.parametrize("mode", TRAIN_MODES.names())
def test_train_modes(mode: str) -> None:
    model, _ = load_lm(LanguageModelConfig(train=mode, lora_rank=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    if mode == "frozen":
        assert trainable == []
    elif mode == "full":
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total
    else:
        assert trainable and all("lora_" in n for n in trainable)
