"""The language model: any `AutoModelForCausalLM` by id or directory, or the `tiny-llama` preset.

`tiny-llama` is a real `LlamaForCausalLM` from a small config (seeded random weights) with a
word-level tokenizer built with the `tokenizers` library and wrapped as an HF fast tokenizer,
so nothing is downloaded. Train modes: frozen, lora (PEFT), full.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from search_space.point import LanguageModelConfig
from search_space.presets import LM_PRESETS
from search_space.registry import Registry
from trials.vlm.experts import preset_seed

IMAGE_TOKEN = "<image>"
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN]

# Words of the built-in probe benchmark's questions and answers, plus common VQA words.
WORDS = """
what which where how many is are the a an of in on at to this that there image picture object
objects color colour shape digit number written small text left right above below top bottom
upper lower middle center centre quadrant side first second one two three four five six seven
eight nine zero yes no red green blue yellow purple orange white black gray grey cyan magenta
brown pink circle square triangle star cross diamond ring bar or and than count
0 1 2 3 4 5 6 7 8 9 10 11 12 ? . , :
more higher
""".split()  # noqa: SIM905 - a word list reads best as text


def word_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer; unknown words map to `<unk>`."""
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SPECIAL + (words or WORDS)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=[IMAGE_TOKEN])


def _tiny_llama(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    tokenizer = word_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True, **LM_PRESETS.get(name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset_seed(name))
        model = LlamaForCausalLM(config)
    return model, tokenizer


def _pretrained(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@dataclass(frozen=True)
class TrainMode:
    """How the LM's parameters train: a function that prepares the model."""

    apply: Callable[[PreTrainedModel, LanguageModelConfig], nn.Module]


def _frozen(model: PreTrainedModel, cfg: LanguageModelConfig) -> nn.Module:
    return model.requires_grad_(False)


def _full(model: PreTrainedModel, cfg: LanguageModelConfig) -> nn.Module:
    return model.requires_grad_(True)


def _lora(model: PreTrainedModel, cfg: LanguageModelConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)  # freezes the base; adapters train


TRAIN_MODES: Registry[TrainMode] = Registry("LM train mode")
TRAIN_MODES.register("frozen", TrainMode(_frozen), "no LM parameter trains")
TRAIN_MODES.register("lora", TrainMode(_lora), "low-rank adapters on every linear layer (PEFT)")
TRAIN_MODES.register("full", TrainMode(_full), "every LM parameter trains")


def load_lm(cfg: LanguageModelConfig) -> tuple[nn.Module, PreTrainedTokenizerFast]:
    """The LM (prepared for its train mode) and its tokenizer, which knows `<image>`."""
    model, tokenizer = _tiny_llama(cfg.source) if cfg.source in LM_PRESETS else _pretrained(cfg.source)
    return TRAIN_MODES.get(cfg.train).apply(model, cfg), tokenizer


def save_tiny_llama(directory: str, name: str = "tiny-llama") -> None:
    """Write the preset as a checkpoint directory (model + tokenizer), loadable by path."""
    model, tokenizer = _tiny_llama(name)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
