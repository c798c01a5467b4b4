"""`vlmsearch data FILE.json --image-folder DIR`: what a LLaVA-format data set holds before any
trial reads it — records, turns, text-only records, images missing or unreadable, and token
lengths under the LM's tokenizer and chat format (with how many records exceed its maximum).

The file goes through the same streamed, validated Arrow table as training
(`trials.data.records`), read back a batch at a time, so a 665k-record file is reported in
bounded memory; a malformed file raises the same DataError (every bad record named).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NAMED = 5                 # missing / unreadable images spelled out in the report
BATCH = 2048              # records tokenised per Arrow batch
SANE_MAX = 10_000_000     # a tokenizer's model_max_length above this means "not set" (HF's 1e30)
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Spread:
    """Percentiles (the nearest value at or above) and the maximum of a per-record count."""

    p50: int
    p90: int
    p99: int
    max: int

    @staticmethod
    def of(values: np.ndarray) -> Spread:
        if not len(values):
            return Spread(0, 0, 0, 0)
        p50, p90, p99 = (int(np.percentile(values, q, method="higher")) for q in PERCENTILES)
        return Spread(p50, p90, p99, int(values.max()))

    def text(self) -> str:
        return f"p50 {self.p50:,}, p90 {self.p90:,}, p99 {self.p99:,}, max {self.max:,}"


@dataclass(frozen=True)
class ImageReport:
    referenced: int           # distinct image paths
    missing: int
    unreadable: int
    records_affected: int     # records whose image is missing or unreadable
    named: list[str] = field(default_factory=list)  # "path (missing)", the first NAMED of each kind


@dataclass(frozen=True)
class DataReport:
    file: str
    image_folder: str
    lm: str
    records: int
    turns: int
    turns_per_record: Spread
    text_only: int
    images: ImageReport
    tokens: Spread            # per record, the conversation as the LM's chat format encodes it
    max_length: int | None
    max_length_from: str      # which limit max_length is
    over_max_length: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        share = f"{self.text_only / self.records:.1%}" if self.records else "0%"
        img = self.images
        out = [f"{self.file}: {self.records:,} records, {self.turns:,} turns (per record: "
               f"{self.turns_per_record.text()})",
               f"text-only records (no image): {self.text_only:,} ({share})",
               f"images under {self.image_folder}: {img.referenced:,} referenced, {img.missing:,} missing, "
               f"{img.unreadable:,} unreadable ({img.records_affected:,} records)"]
        out += [f"  {named}" for named in img.named]
        out.append(f"tokens per record ({self.lm}'s chat format, <image> as one token): {self.tokens.text()}")
        limit = "no maximum known" if self.max_length is None else f"maximum {self.max_length:,}"
        out.append(f"over the {self.lm} {limit} ({self.max_length_from}): {self.over_max_length:,} records")
        return out


# ---- the tokenizer -----------------------------------------------------------------------------


def lm_tokenizer(source: str) -> tuple[Any, int | None, str]:
    """The LM's tokenizer (as `trials.vlm.lm.load_lm` gives it: presets get the word tokenizer,
    others their own with `<image>` added), its maximum sequence length and where that comes
    from. Only the tokenizer and the config are read; no model is built."""
    from search_space import LM_PRESETS
    from trials import load_tokenizer

    if source in LM_PRESETS:
        tokenizer = load_tokenizer(source)
        config_max = LM_PRESETS.get(source).get("max_position_embeddings")
    else:
        from transformers import AutoConfig

        try:
            tokenizer = load_tokenizer(source)
            config_max = getattr(AutoConfig.from_pretrained(source), "max_position_embeddings", None)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"--lm '{source}': cannot load its tokenizer ({first}); name a preset "
                             "(tiny-llama), a local checkpoint directory or a cached HF id") from err
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared <= SANE_MAX:
        return tokenizer, declared, "the tokenizer's model_max_length"
    if config_max:
        return tokenizer, int(config_max), "the LM config's max_position_embeddings"
    return tokenizer, None, "neither the tokenizer nor the LM config sets one"


# ---- the passes over the table -----------------------------------------------------------------


def image_report(table: Any, folder: Path) -> ImageReport:
    """Every distinct image checked once (exists, its header opens)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from trials import image_problem, record_column

    images = record_column(table, "image")
    distinct = pc.unique(images).drop_null()
    bad: list[str] = []
    named: dict[str, list[str]] = {"missing": [], "unreadable": []}
    counts = {"missing": 0, "unreadable": 0}
    for image in distinct.to_pylist():
        problem = image_problem(folder / image, full=False)
        if problem is None:
            continue
        kind, detail = problem
        bad.append(image)
        counts[kind] += 1
        if len(named[kind]) < NAMED:
            named[kind].append(f"{image} ({kind}: {detail})")
    affected = int(pc.sum(pc.is_in(images, value_set=pa.array(bad, pa.string()))).as_py() or 0) if bad else 0
    return ImageReport(len(distinct), counts["missing"], counts["unreadable"], affected,
                       named["missing"] + named["unreadable"])


def token_lengths(table: Any, tokenizer: Any) -> np.ndarray:
    """(N,) tokens of each record's conversation under the LM's chat format, a batch at a time."""
    from trials import ChatFormat

    chat = ChatFormat(tokenizer, system_prompt=None)
    lengths = np.zeros(len(table), dtype=np.int64)
    at = 0
    for batch in table.data.table.select(["image", "conversations"]).to_batches(max_chunksize=BATCH):
        has_image = batch.column("image").is_valid().to_pylist()
        pairs = [([(t["from"], t["value"]) for t in conversation], image)
                 for conversation, image in zip(batch.column("conversations").to_pylist(), has_image,
                                                strict=True)]
        lengths[at:at + len(pairs)] = chat.lengths(pairs)
        at += len(pairs)
    return lengths


def data_report(file: Path, image_folder: Path, lm: str = "tiny-llama") -> DataReport:
    """The report of one LLaVA JSON file; DataError (a ValueError) for a malformed file, ValueError
    for a tokenizer that cannot be loaded."""
    import pyarrow.compute as pc

    from trials import read_records, record_column

    table = read_records(file, what="FILE")  # first: a broken file is named before torch loads
    tokenizer, max_length, limit = lm_tokenizer(lm)
    turns = pc.list_value_length(record_column(table, "conversations")).to_numpy()
    tokens = token_lengths(table, tokenizer)
    over = int((tokens > max_length).sum()) if max_length is not None else 0
    return DataReport(str(file), str(image_folder), lm, len(table), int(turns.sum()), Spread.of(turns),
                      int(record_column(table, "image").null_count), image_report(table, image_folder),
                      Spread.of(tokens), max_length, limit, over)
