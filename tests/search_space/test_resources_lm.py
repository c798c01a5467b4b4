"""The LM resource model (`search_space.resources.lm`) against the real HF classes.

- parameters: exact, for the preset (built by `load_lm`), for local checkpoint directories of
  each family (loaded by `load_lm`) and for every known id (built on the meta device from its
  config, embeddings resized as `load_lm` does); LoRA trainable counts against PEFT;
- FLOPs: `FlopCounterMode` on the meta device (sdpa's math path there: `recompute=False`) for
  the call the VLM makes (`inputs_embeds` requiring grad, position ids, labels), in every train
  mode, with and without gradient checkpointing, at paper scale;
- activations: the bytes autograd saves (hooks, one count per storage, parameters and autocast's
  bf16 copies of weights left out) on real CPU tensors for scaled-down configs of each family.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from search_space.point import LanguageModelConfig
from search_space.resources.known_lms import IMAGE_TOKEN, KNOWN_LMS, read_checkpoint, word_vocab
from search_space.resources.lm import (
    LMArch,
    arch_from_config,
    lm_arch,
    lm_cost,
    lm_forward_flops,
    lm_params,
    lm_trainable,
)
from trials.measure import Saved, count_flops, saved_tensors
from trials.vlm.lm import TRAIN_MODES, load_lm, word_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("frozen", "lora", "full")
pytestmark = pytest.mark.filterwarnings(
    "ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")


# ---- building models ----------------------------------------------------------------------

def _build(config: Mapping[str, Any], device: str = "cpu", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(config)))


def _meta_known(source: str) -> nn.Module:
    """A known checkpoint's model on the meta device, with the embeddings load_lm would have."""
    known = KNOWN_LMS.get(source)
    model = _build(known.config, "meta")
    rows = known.tokenizer_len + (not known.image_token)
    if rows > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(rows, mean_resizing=False)  # meta: no weights to average
    return model


def _prepare(model: nn.Module, train: str, rank: int = 8, checkpointing: bool = False) -> nn.Module:
    """As a trial prepares it: train mode, checkpointing as asked, then load_lm's train mode."""
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return TRAIN_MODES.get(train).apply(model, LanguageModelConfig(train=train, lora_rank=rank))


def _n_params(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


# ---- parameters ---------------------------------------------------------------------------

def test_the_preset_vocabulary_is_the_word_tokenizer() -> None:
    arch = lm_arch("tiny-llama")
    assert arch is not None
    assert arch.vocab_rows == len(word_tokenizer()) == len(word_vocab())
    assert word_tokenizer().get_vocab() == word_vocab()


@pytest.mark.parametrize("train", MODES)
def test_preset_parameters_are_exact(train: str) -> None:
    model, _ = load_lm(LanguageModelConfig(train=train, lora_rank=4))
    arch = lm_arch("tiny-llama")
    assert arch is not None
    cost = lm_cost(arch, 1, train, 4)
    assert _n_params(model) == (cost.params, cost.trainable)


def _word_level(words: list[str], image: bool) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<unk>", "<s>", "</s>"] + ([IMAGE_TOKEN] if image else [])
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>")


def _bpe() -> PreTrainedTokenizerFast:
    """A Qwen-like BPE: byte-ish base vocabulary and merges, control tokens added on top."""
    letters = list("abcdefghijklmnopqrstuvwxyz")
    merges = [("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")]
    vocab = {tok: i for i, tok in enumerate(letters + ["".join(m) for m in merges])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


_WORDS = ["the", "a", "red", "blue", "green", "square", "circle", "what", "is", "color"]
_SMALL_SIZES = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
                "num_attention_heads": 4}


def _llama_dir() -> tuple[dict[str, Any], PreTrainedTokenizerFast]:
    """No <image>, embeddings exactly the tokenizer: load_lm grows them by one row."""
    tok = _word_level(_WORDS, image=False)
    return {"model_type": "llama", **_SMALL_SIZES, "num_key_value_heads": 2,
            "vocab_size": len(tok)}, tok


def _qwen2_dir() -> tuple[dict[str, Any], PreTrainedTokenizerFast]:
    """Spare embedding rows (as Qwen2's 152064 for ~151646 tokens): load_lm must not shrink."""
    tok = _bpe()
    return {"model_type": "qwen2", **_SMALL_SIZES, "num_key_value_heads": 2,
            "vocab_size": len(tok) + 37}, tok


def _mistral_dir() -> tuple[dict[str, Any], PreTrainedTokenizerFast]:
    """<image> already known, tokenizer longer than the embeddings; head_dim != hidden/heads."""
    tok = _word_level(_WORDS, image=True)
    return {"model_type": "mistral", **_SMALL_SIZES, "num_key_value_heads": 1, "head_dim": 32,
            "sliding_window": None, "vocab_size": len(tok) - 3}, tok


@pytest.mark.parametrize("make", [_llama_dir, _qwen2_dir, _mistral_dir],
                         ids=["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("train", ["lora", "full"])
def test_local_directory_parameters_are_exact(tmp_path: Path, make: Callable[[], Any],
                                              train: str) -> None:
    config, tok = make()
    _build(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    arch = lm_arch(str(tmp_path))
    assert arch is not None and arch.family == config["model_type"]
    read, saved = read_checkpoint(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert read is not None
    assert (read.tokenizer_len, read.image_token) == (len(saved), IMAGE_TOKEN in saved.get_vocab())
    model, tokenizer = load_lm(LanguageModelConfig(source=str(tmp_path), train=train, lora_rank=4))
    rows = model.get_input_embeddings().num_embeddings
    assert rows == arch.vocab_rows == max(config["vocab_size"], len(tokenizer))
    cost = lm_cost(arch, 1, train, 4)
    assert _n_params(model) == (cost.params, cost.trainable)


def test_unknown_sources_are_none(tmp_path: Path) -> None:
    assert lm_arch("someone/never-heard-of-it") is None
    assert lm_arch(str(tmp_path)) is None  # no config.json
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    assert lm_arch(str(tmp_path)) is None  # a family the model does not cover


@pytest.mark.parametrize("source", KNOWN_LMS.names())
def test_known_ids_parameters_are_exact(source: str) -> None:
    arch = lm_arch(source)
    assert arch is not None
    model = _meta_known(source)
    assert model.get_input_embeddings().num_embeddings == arch.vocab_rows
    assert _n_params(model)[0] == lm_params(arch)
    lora = _prepare(model, "lora", rank=16)
    cost = lm_cost(arch, 1, "lora", 16)
    assert _n_params(lora) == (cost.params, cost.trainable) == (
        lm_params(arch) + lm_trainable(arch, "lora", 16), lm_trainable(arch, "lora", 16))


# ---- FLOPs --------------------------------------------------------------------------------

def _meta_flops(model: nn.Module, arch: LMArch, seq_len: int) -> tuple[int, int]:
    """(forward, backward) FLOPs of one training step of one sequence on the meta device.

    A 2D attention mask's values cannot be read on meta (HF checks it for padding), so the
    all-ones mask is passed as the causal 4D mask it stands for; the FLOPs are the same."""
    x = torch.empty(1, seq_len, arch.hidden, device="meta", requires_grad=True)
    labels = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    positions = torch.arange(seq_len, device="meta")[None]
    mask = torch.ones(1, 1, seq_len, seq_len, dtype=torch.bool, device="meta")

    def forward() -> Any:
        return model(inputs_embeds=x, attention_mask=mask, position_ids=positions, labels=labels)

    fwd = count_flops(forward)
    step = count_flops(lambda: forward().loss.backward())
    return fwd, step - fwd


def _check_flops(model: nn.Module, arch: LMArch, seq_len: int, train: str, rank: int,
                 checkpointing: bool) -> None:
    cost = lm_cost(arch, seq_len, train, rank, checkpointing, recompute=False)
    assert _meta_flops(model, arch, seq_len) == (cost.forward, cost.backward)


@pytest.mark.parametrize("train", MODES)
def test_preset_flops_are_exact(train: str) -> None:
    arch = lm_arch("tiny-llama")
    assert arch is not None
    for checkpointing in (False, True):
        model, _ = load_lm(LanguageModelConfig(train="full"))
        model = _prepare(model.to("meta"), train, 4, checkpointing)
        _check_flops(model, arch, 96, train, 4, checkpointing)


PAPER_CASES = [(source, 600) for source in ("lmsys/vicuna-7b-v1.5", "meta-llama/Meta-Llama-3-8B-Instruct",
                                           "Qwen/Qwen2-7B-Instruct")] + [("lmsys/vicuna-7b-v1.5", 5000)]


@pytest.mark.slow
@pytest.mark.parametrize(("source", "seq_len"), PAPER_CASES)
@pytest.mark.parametrize("train", MODES)
def test_paper_scale_flops_are_exact(source: str, seq_len: int, train: str) -> None:
    arch = lm_arch(source)
    assert arch is not None
    for checkpointing in (False, True):
        model = _prepare(_meta_known(source), train, 8, checkpointing)
        _check_flops(model, arch, seq_len, train, 8, checkpointing)


def test_inference_forward_flops() -> None:
    arch = lm_arch("Qwen/Qwen2-7B-Instruct")
    assert arch is not None
    model = _meta_known("Qwen/Qwen2-7B-Instruct").eval()
    x = torch.empty(1, 700, arch.hidden, device="meta")
    with torch.no_grad():
        flops = count_flops(lambda: model(inputs_embeds=x, attention_mask=torch.ones(
            1, 1, 700, 700, dtype=torch.bool, device="meta")))
    assert flops == lm_forward_flops(arch, 700)


def test_gpu_kernels_add_one_product_per_attention_backward() -> None:
    arch = lm_arch("lmsys/vicuna-7b-v1.5")
    assert arch is not None
    fused, math = lm_cost(arch, 1000, "frozen"), lm_cost(arch, 1000, "frozen", recompute=False)
    assert fused.backward - math.backward == arch.layers * 2 * 1000 * 1000 * arch.q_width


# ---- activations --------------------------------------------------------------------------

SMALL = {  # scaled-down configs of each family; seq lengths match no weight dimension
    "llama": ({"model_type": "llama", "hidden_size": 64, "intermediate_size": 176,
               "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 300}, 72),
    "qwen2": ({"model_type": "qwen2", "hidden_size": 96, "intermediate_size": 224,
               "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
               "vocab_size": 400}, 200),
    "mistral": ({"model_type": "mistral", "hidden_size": 64, "intermediate_size": 160,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
                 "head_dim": 32, "sliding_window": None, "vocab_size": 300}, 500),
}
_LAYER = re.compile(r"layers\.(\d+)(\.|$)")


def _saved(model: nn.Module, d: int, seq_len: int, precision: str) -> list[Saved]:
    """What one training step saves (storages once), weights and autocast's weight copies out."""
    torch.manual_seed(1)
    x = torch.randn(1, seq_len, d, requires_grad=True)
    labels = torch.randint(0, 50, (1, seq_len))
    positions = torch.arange(seq_len)[None]
    mask = torch.ones(1, seq_len, dtype=torch.long)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(inputs_embeds=x, attention_mask=mask, position_ids=positions,
                         labels=labels).loss
        loss.backward()

    params = list(model.parameters())
    shapes = {tuple(p.shape) for p in params if p.dim() == 2}
    records = saved_tensors(step, params, model=model)
    return [r for r in records if not _weight_copy(r, shapes)]


def _weight_copy(record: Saved, weight_shapes: set[tuple[int, ...]]) -> bool:
    """A bf16 copy autocast made of a weight (saved as W or W^T): per step, not per sample."""
    return (record.dtype == torch.bfloat16 and len(record.shape) == 2
            and (record.shape in weight_shapes or record.shape[::-1] in weight_shapes))


def _layer(record: Saved) -> int | None:
    match = _LAYER.search(record.where)
    return int(match.group(1)) if match else None


def _measured_checkpointed(plain: list[Saved], checkpointed: list[Saved], arch: LMArch,
                           seq_len: int) -> int:
    """Peak bytes of saved tensors with checkpointing, from measured parts.

    The hooks see what the checkpointed forward keeps: each layer's input (checkpoint saves it
    with `_NoopSaveInputs`) and the head's and loss's tensors. A layer's recompute happens under
    checkpoint's own hooks and saves exactly what the layer saves without checkpointing, so that
    part is layer 0's saved set from the plain run (its input, already kept, left out; the rotary
    tables it saves first are alive throughout, held by the checkpoint closures)."""
    kept = [r for r in checkpointed if _layer(r) is not None]
    assert [r.shape for r in kept] == [(1, seq_len, arch.hidden)] * arch.layers
    head = sum(r.nbytes for r in checkpointed if _layer(r) is None)
    layer0 = [r for r in plain if _layer(r) == 0]
    rope = sum(r.nbytes for r in layer0 if r.shape == (1, 1, seq_len, arch.head_dim))
    recomputed = sum(r.nbytes for r in layer0) - rope - kept[0].nbytes
    return sum(r.nbytes for r in kept) + rope + max(head, recomputed)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("train", MODES)
@pytest.mark.parametrize("family", list(SMALL))
def test_activation_bytes(family: str, train: str, precision: str) -> None:
    config, seq_len = SMALL[family]
    arch = arch_from_config(config, config["vocab_size"], image_token=True)
    plain = _saved(_prepare(_build(config), train), arch.hidden, seq_len, precision)
    checkpointed = _saved(_prepare(_build(config), train, checkpointing=True), arch.hidden,
                          seq_len, precision)
    measured = {False: sum(r.nbytes for r in plain),
                True: _measured_checkpointed(plain, checkpointed, arch, seq_len)}
    for checkpointing, bytes_ in measured.items():
        predicted = lm_cost(arch, seq_len, train, 8, checkpointing, precision).activations
        # The budget is 20%; the model is byte-exact here (torch 2.13, transformers 5.24).
        assert predicted == pytest.approx(bytes_, rel=0.02), (checkpointing, predicted, bytes_)
