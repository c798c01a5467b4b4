"""Conversations as token ids and labels, the way the LM's own chat format has them.

A tokenizer with a chat template is rendered with `apply_chat_template` (roles: LLaVA's human /
gpt / system -> user / assistant / system; an optional system prompt first). The labels are the
tokens of every assistant turn with its end-of-turn marker (LLaVA's masking: no loss on the
system prompt, human turns or the image); an assistant turn's span is found by rendering the
conversation up to it with the generation prompt, which every prefix-consistent template
(ChatML as Qwen2's, Llama-3's) ends exactly where the reply starts.
A tokenizer without a template gets the plain format: `[bos] <image> question answer eos ...`
(no BOS when the tokenizer has none, as Qwen2's).

`<image>` stays wherever the record puts it; a record with an image but no tag gets one before
its first human turn (LLaVA's loader does the same).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trials.vlm.lm import IMAGE_TOKEN

IGNORE = -100
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}  # LLaVA's names -> the templates'
Turn = tuple[str, str]
Span = tuple[int, int]  # [start, end) characters of the rendered text


@dataclass(frozen=True)
class Encoded:
    """One conversation's ids; `labels` IGNORE outside assistant turns; `content[k]`: token k is
    inside an assistant reply's text (its end-of-turn marker excluded: what scoring sums)."""

    input_ids: list[int]
    labels: list[int]
    content: list[bool]
    truncated: bool = False


def with_image_tag(turns: Sequence[Turn], has_image: bool, separator: str) -> list[Turn]:
    """The turns, with `<image>` before the first human turn when the record has an image and no tag."""
    out = [(role, text) for role, text in turns]
    if has_image and not any(IMAGE_TOKEN in text for _, text in out):
        first = next((i for i, (role, _) in enumerate(out) if role == "human"), None)
        if first is None:
            raise ValueError("a record with an image needs a human turn to put <image> in")
        out[first] = ("human", f"{IMAGE_TOKEN}{separator}{out[first][1]}")
    return out


class ChatFormat:
    """Encodes conversations for one tokenizer: its chat template, or the plain format."""

    def __init__(self, tokenizer: Any, system_prompt: str | None = None) -> None:
        self.tok, self.system = tokenizer, system_prompt
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self.stop_ids = frozenset(i for i in (tokenizer.eos_token_id, self._end_of_turn()) if i is not None)

    # ---- the two formats ------------------------------------------------------------------

    def _messages(self, turns: Sequence[Turn]) -> list[dict[str, str]]:
        messages = [{"role": ROLES.get(role, role), "content": text} for role, text in turns]
        if self.system is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    def _render(self, messages: list[dict[str, str]], prompt: bool = False) -> str:
        return str(self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt))

    def _templated(self, turns: Sequence[Turn], prompt: bool) -> tuple[str, list[Span], list[Span]]:
        """The rendered text, the assistant turns' spans (reply + end-of-turn) and the replies'."""
        messages = self._messages(turns)
        text = self._render(messages, prompt)
        spans, replies = [], []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self._render(messages[:i], prompt=True)
            start, end = len(before), len(self._render(messages[:i + 1]))
            if not text.startswith(before) or end > len(text):
                raise ValueError("the tokenizer's chat template renders a conversation's beginning "
                                 "differently from the whole, so the replies cannot be labelled; "
                                 "use a prefix-consistent template (as Qwen2's or Llama-3's)")
            at = text.find(message["content"], start, end)
            spans.append((start, end))
            replies.append((at, at + len(message["content"])) if at >= 0 else (start, end))
        return text, spans, replies

    def _plain(self, turns: Sequence[Turn]) -> tuple[list[int], list[int], list[bool]]:
        tok = self.tok
        ids: list[int] = [] if tok.bos_token_id is None else [tok.bos_token_id]
        labels, content = [IGNORE] * len(ids), [False] * len(ids)

        def add(tokens: list[int], reply: bool, inside: list[bool]) -> None:
            ids.extend(tokens)
            labels.extend(tokens if reply else [IGNORE] * len(tokens))
            content.extend(inside)

        if self.system is not None:
            system = tok(self.system, add_special_tokens=False)["input_ids"]
            add(system, False, [False] * len(system))
        for role, text in turns:
            reply = role == "gpt"
            part = tok(f" {text}" if reply else text, add_special_tokens=False)["input_ids"]
            add([*part, tok.eos_token_id] if reply else part, reply, [reply] * len(part) + [False] * reply)
        return ids, labels, content

    # ---- what callers use -----------------------------------------------------------------

    def encode(self, turns: Sequence[Turn], has_image: bool = True, max_length: int | None = None,
               prompt: bool = False) -> Encoded:
        """Ids and labels of the conversation (`prompt`: followed by the generation prompt, for
        asking); cut to `max_length` tokens from the right (LLaVA truncates so), never before
        the `<image>` token."""
        turns = with_image_tag(turns, has_image, "\n" if self.templated else " ")
        if self.templated:
            ids, labels, content = self._label(*self._templated(turns, prompt))
        else:
            ids, labels, content = self._plain(turns)
        if max_length is None or len(ids) <= max_length:
            return Encoded(ids, labels, content)
        image = self.tok.convert_tokens_to_ids(IMAGE_TOKEN)
        cut = max(max_length, ids.index(image) + 1 if has_image and image in ids else 0)
        return Encoded(ids[:cut], labels[:cut], content[:cut], truncated=True)

    def _label(self, text: str, spans: list[Span], replies: list[Span]
               ) -> tuple[list[int], list[int], list[bool]]:
        out = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(out["input_ids"]), out["offset_mapping"]
        starts = [s for s, _ in spans]
        labels, content = [], []
        for token, (begin, _) in zip(ids, offsets, strict=True):
            k = bisect.bisect_right(starts, begin) - 1
            inside = k >= 0 and begin < spans[k][1]
            labels.append(token if inside else IGNORE)
            content.append(inside and replies[k][0] <= begin < replies[k][1])
        return ids, labels, content

    def lengths(self, conversations: Sequence[tuple[Sequence[Turn], bool]]) -> list[int]:
        """Tokens of each (turns, has_image) conversation as `encode` gives them, untruncated; with
        a template: one render each and one batched tokenization (what a data report needs)."""
        if self.templated:
            texts = [self._render(self._messages(with_image_tag(turns, image, "\n")))
                     for turns, image in conversations]
            return [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]
        system = [] if self.system is None else self.tok(self.system, add_special_tokens=False)["input_ids"]
        fixed = int(self.tok.bos_token_id is not None) + len(system)
        pieces, owner = [], []  # every turn's text as `_plain` tokenizes it, and its conversation
        for k, (turns, image) in enumerate(conversations):
            for role, text in with_image_tag(turns, image, " "):
                pieces.append(f" {text}" if role == "gpt" else text)
                owner.append((k, role == "gpt"))  # a reply also ends with eos
        lengths = [fixed] * len(conversations)
        for (k, reply), ids in zip(owner, self.tok(pieces, add_special_tokens=False)["input_ids"],
                                   strict=True):
            lengths[k] += len(ids) + reply
        return lengths

    def ask(self, question: str, has_image: bool = True) -> list[int]:
        """Ids of one human question followed by the generation prompt: what the LM answers."""
        if not self.templated:
            return self.encode([("human", question)], has_image).input_ids
        return self.encode([("human", question)], has_image, prompt=True).input_ids

    def reply_ids(self, question: str, answer: str) -> list[int]:
        """The tokens of `answer` as the LM would write it after `question` (its reply's text)."""
        encoded = self.encode([("human", question), ("gpt", answer)])
        return [t for t, inside in zip(encoded.input_ids, encoded.content, strict=True) if inside]

    def _end_of_turn(self) -> int | None:
        """The first token after an assistant reply in the template (`<|im_end|>`, `<|eot_id|>`)."""
        if not self.templated:
            return None
        text, spans, replies = self._templated([("human", "q"), ("gpt", "a")], prompt=False)
        after = text[replies[0][1]:spans[0][1]]
        ids = self.tok(after, add_special_tokens=False)["input_ids"] if after.strip() else []
        return int(ids[0]) if ids else None
