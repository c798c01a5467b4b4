"""Tiny LMs with real families' tokenizer settings, written as checkpoint directories (loaded by
path, as real ids are): a Qwen2-style one (no BOS token, ChatML template, pad <|endoftext|>) and a
Llama-3-style one (BOS <|begin_of_text|>, header template, eos <|eot_id|>, no pad token).
Word-level vocabularies keep them small; the templates are the families' own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from search_space.resources.known_lms import WORDS

# Qwen2-Instruct's template, verbatim
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Meta-Llama-3-Instruct's template, verbatim
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
ROLE_WORDS = ["system", "user", "assistant", "you", "are", "helpful", "be", "brief"]
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 2048}


def _tokenizer(special: list[str], **tokens: Any) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (no `<image>`: loading adds it, as for a real LM's)."""
    words = list(dict.fromkeys([*special, "<unk>", *ROLE_WORDS, *WORDS]))
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>",
                                   additional_special_tokens=special, **tokens)


def _byte_bpe(special: list[str], **tokens: Any) -> PreTrainedTokenizerFast:
    """A byte-level BPE (as Qwen2's), trained here on the probe's words: Qwen2's tokenizer class
    rebuilds a BPE from the saved file, so a word-level one would not survive loading."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([" ".join(ROLE_WORDS + WORDS)] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, additional_special_tokens=special, **tokens)


def save_qwen2(folder: Path, padding_side: str = "right") -> Path:
    """A Qwen2ForCausalLM with Qwen2-Instruct's tokenizer settings, saved under `folder`."""
    tok = _byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos_token=None,
                    eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side=padding_side)
    tok.chat_template = CHATML
    config = Qwen2Config(vocab_size=len(tok) + 8, bos_token_id=None, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **SMALL)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_llama3(folder: Path, padding_side: str = "right") -> Path:
    """A LlamaForCausalLM with Llama-3-Instruct's tokenizer settings (no pad token), saved."""
    tok = _tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                      "<|end_header_id|>", "<|eot_id|>"], bos_token="<|begin_of_text|>",
                     eos_token="<|eot_id|>", padding_side=padding_side)
    tok.chat_template = LLAMA3
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=True, **SMALL)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
