"""What vlmsearch knows about language models without loading them (torch-free).

- the `tiny-llama` preset's word vocabulary (`trials.vlm.lm.word_tokenizer` builds its tokenizer
  from `word_vocab()`, so its length is known here without importing trials);
- `KNOWN_LMS`: published `config.json` values and tokenizer lengths of well-known HF checkpoints;
- `read_checkpoint(directory)`: the same for a local checkpoint directory, read from its
  `config.json` and tokenizer files with `json` alone.

A `KnownLM` holds what `search_space.resources.lm.lm_arch` needs to size the model vlmsearch
builds: the config keys (HF names; absent keys take the family's defaults) and the tokenizer's
length before `load_lm` adds `<image>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.registry import Registry

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


def word_vocab(words: list[str] | None = None) -> dict[str, int]:
    """Token -> id of the word-level tokenizer: the special tokens, then each word once."""
    return {tok: i for i, tok in enumerate(dict.fromkeys(SPECIAL + (words or WORDS)))}


@dataclass(frozen=True)
class KnownLM:
    """An LM checkpoint as the resource model sees it."""

    config: Mapping[str, Any] = field(compare=False)  # config.json keys (model_type included)
    tokenizer_len: int             # len(AutoTokenizer.from_pretrained(...)), before <image>
    image_token: bool = False      # the tokenizer already knows <image>


def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int, positions: int,
           vocab: int) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
            "max_position_embeddings": positions, "vocab_size": vocab, "tie_word_embeddings": False,
            "attention_bias": False, "mlp_bias": False}


_QWEN2_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
             "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
             "max_position_embeddings": 32768, "vocab_size": 152064, "tie_word_embeddings": False,
             "use_sliding_window": False}

KNOWN_LMS: Registry[KnownLM] = Registry("known language model")
# Llama-2 7B shapes (4096/11008/32 layers/32 heads, MHA, 4096 positions, vocab 32000, untied):
# the HF config.json of meta-llama/Llama-2-7b-hf, as quoted in microsoft/Olive
# examples/llm/config.py and printed in Retruth/deontic nlp_models/llama2/README.md (Embedding
# (32000, 4096), k_proj 4096->4096). The SentencePiece tokenizer has 32000 pieces (<unk>, <s>,
# </s> among them), so len(tokenizer) == 32000.
KNOWN_LMS.register("meta-llama/Llama-2-7b-hf",
                   KnownLM(_llama(4096, 11008, 32, 32, 32, 4096, 32000), 32000), "Llama-2 7B")
# Vicuna v1.5 is a Llama-2 fine-tune with Llama-2's config and tokenizer (lmsys/FastChat).
KNOWN_LMS.register("lmsys/vicuna-7b-v1.5",
                   KnownLM(_llama(4096, 11008, 32, 32, 32, 4096, 32000), 32000), "Vicuna-7B v1.5")
# Llama-2 13B shapes (5120/13824/40 layers/40 heads): Retruth/deontic nlp_models/llama2/README.md
# prints the 13B model (Embedding(32000, 5120), 40 layers).
KNOWN_LMS.register("lmsys/vicuna-13b-v1.5",
                   KnownLM(_llama(5120, 13824, 40, 40, 40, 4096, 32000), 32000), "Vicuna-13B v1.5")
# Meta-Llama-3-8B-Instruct config.json (hidden 4096, intermediate 14336, 32 layers, 32 heads,
# 8 KV heads, 8192 positions, vocab 128256, untied, no biases), as quoted verbatim in public
# code (search: "llama_3_8B_Instruct_cfg_str") and in oumi's Llama-3.1 8B table. Tokenizer:
# 128000 BPE ranks + 256 special tokens = 128256 (e.g. agentstation/tokenizer llama3/constants.go).
KNOWN_LMS.register("meta-llama/Meta-Llama-3-8B-Instruct",
                   KnownLM(_llama(4096, 14336, 32, 32, 8, 8192, 128256), 128256),
                   "Llama-3 8B Instruct")
# Qwen2-7B-Instruct config.json: Retruth/deontic nlp_models/qwen2/README.md prints its Qwen2Config
# (3584/18944/28 layers/28 heads/4 KV heads, 32768 positions, untied) and the module tree
# (Embedding(152064, 3584); q/k/v with bias, o_proj without). Tokenizer: 151643 BPE tokens + 3
# control tokens = 151646 (Qwen docs "Tokens & Tokenization", quoted in acproject/duorou
# docs/qwen_model_doc.md), so the embedding has 418 spare rows and <image> needs no resize.
KNOWN_LMS.register("Qwen/Qwen2-7B-Instruct", KnownLM(_QWEN2_7B, 151646), "Qwen2 7B Instruct")
# Qwen2.5-7B-Instruct has Qwen2-7B's shapes (its config.json: same sizes, vocab 152064, untied;
# cf. the per-linear shapes 3584x3584, 512x3584, 18944x3584 listed for Qwen2.5-7B in public
# code). Its tokenizer adds 22 control tokens (151643..151664): len(tokenizer) == 151665
# (yanfeng98/fork-llama-factory test/tokenizer.py prints it for the Qwen2.5 tokenizer).
KNOWN_LMS.register("Qwen/Qwen2.5-7B-Instruct", KnownLM(_QWEN2_7B, 151665), "Qwen2.5 7B Instruct")
# Mistral-7B-Instruct-v0.2 config.json: 4096/14336/32 layers/32 heads/8 KV heads, head_dim 128,
# vocab 32000 (edadaltocg/mistral-src-finetune finetune/config.py), 32k context, rope_theta 1e6
# and no sliding window (Azure/azureml-assets Mistral-7B-Instruct-v0-2 description.md).
# SentencePiece tokenizer of 32000 pieces.
KNOWN_LMS.register(
    "mistralai/Mistral-7B-Instruct-v0.2",
    KnownLM({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
             "head_dim": 128, "max_position_embeddings": 32768, "vocab_size": 32000,
             "tie_word_embeddings": False, "sliding_window": None}, 32000),
    "Mistral 7B Instruct v0.2")


# ---- local checkpoint directories ---------------------------------------------------------

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                 "mask_token")


def read_checkpoint(directory: str | Path) -> KnownLM | None:
    """A local checkpoint's config and tokenizer length, or None when it has no config.json."""
    root = Path(directory)
    config = _json(root / "config.json")
    if config is None:
        return None
    tokens = _tokenizer_tokens(root)
    if tokens is None:  # no tokenizer.json (e.g. SentencePiece only): assume it fills the config
        return KnownLM(config, int(config.get("vocab_size", 0)))
    return KnownLM(config, len(tokens), IMAGE_TOKEN in tokens)


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else None


def _tokenizer_tokens(root: Path) -> set[str] | None:
    """Every token the loaded tokenizer will know: tokenizer.json's model vocabulary and added
    tokens, plus tokenizer_config.json's added and special tokens (HF adds missing ones)."""
    fast = _json(root / "tokenizer.json")
    if fast is None:
        return None
    vocab = fast.get("model", {}).get("vocab", {})
    tokens = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}  # Unigram
    tokens |= {t["content"] for t in fast.get("added_tokens", [])}
    return tokens | _config_tokens(_json(root / "tokenizer_config.json") or {})


def _config_tokens(config: Mapping[str, Any]) -> set[str]:
    out = {t["content"] for t in config.get("added_tokens_decoder", {}).values()}
    named = [config.get(key) for key in _SPECIAL_KEYS]
    named += list(config.get("additional_special_tokens") or [])
    extra = config.get("extra_special_tokens") or {}
    named += list(extra.values()) if isinstance(extra, dict) else list(extra)
    for tok in named:
        content = tok.get("content") if isinstance(tok, dict) else tok
        if isinstance(content, str):
            out.add(content)
    return out
