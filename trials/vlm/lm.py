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

from search_space import IMAGE_TOKEN, LM_PRESETS, LanguageModelConfig, Registry, word_vocab
from trials.vlm.experts import preset_seed


def word_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer; unknown words map to `<unk>`."""
    vocab = word_vocab(words)
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


def load_tokenizer(source: str) -> PreTrainedTokenizerFast:
    """The tokenizer a trial's LM uses: a preset's word tokenizer, or the checkpoint's own with
    `<image>` added and eos as pad when it has no pad token (Llama-3)."""
    if source in LM_PRESETS:
        return word_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(source)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _pretrained(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # grow only: some configs (Qwen2) have more embedding rows than the tokenizer has tokens
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def _random_weights(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The checkpoint's architecture from its config with random weights and the embeddings
    already at the rows `load_lm` would give it; the word tokenizer stands in for its own
    (benchmarks and the meta device: only shapes matter)."""
    from transformers import AutoConfig

    from search_space import known_lm, lm_arch

    known, arch = known_lm(source), lm_arch(source)
    if known is None or arch is None:
        raise ValueError(f"the config of '{source}' is not known without downloading it; name a "
                         "local checkpoint directory or a known id")
    config = AutoConfig.for_model(**{**known.config, "vocab_size": arch.vocab_rows})
    tokenizer = word_tokenizer()
    config.pad_token_id, config.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    return AutoModelForCausalLM.from_config(config), tokenizer


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


def load_lm(cfg: LanguageModelConfig, random_weights: bool = False
            ) -> tuple[nn.Module, PreTrainedTokenizerFast]:
    """The LM (prepared for its train mode) and its tokenizer, which knows `<image>`.
    `random_weights`: a checkpoint's architecture from its config alone (see _random_weights)."""
    if cfg.source in LM_PRESETS:
        model, tokenizer = _tiny_llama(cfg.source)
    else:
        model, tokenizer = (_random_weights if random_weights else _pretrained)(cfg.source)
    return TRAIN_MODES.get(cfg.train).apply(model, cfg), tokenizer


def save_tiny_llama(directory: str, name: str = "tiny-llama") -> None:
    """Write the preset as a checkpoint directory (model + tokenizer), loadable by path."""
    model, tokenizer = _tiny_llama(name)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
