"""`data.skills`: the probe asks only the chosen skills; absent keeps today's data and hashes;
unknown names get a did-you-mean error at their YAML line."""

from __future__ import annotations

from collections import Counter

import pytest

from search_space import PROBE_SKILLS, DataConfig, SpaceError, compile_space, parse
from search_space.checks import check
from trials.data.probe import probe_splits

POINT = """\
name: p
data: {{train_size: 60, eval_size: 30, image_size: 64{extra}}}
experts:
  clip: {{source: tiny-clip, tokens: 16}}
fusion: {{kind: sequence_concat}}
train: {{steps: 30, lr: 1.0e-3, batch_size: 8}}
"""


def point_hash(extra: str = "") -> str:
    return compile_space(parse(POINT.format(extra=extra)).space).only_point().config_hash


def test_absent_or_all_six_keep_todays_hash_and_order_does_not_count() -> None:
    every = ", ".join(PROBE_SKILLS)
    assert point_hash() == point_hash(f", skills: [{every}]")
    assert point_hash(", skills: [shape, color]") == point_hash(", skills: [color, shape]")
    assert point_hash(", skills: [color, shape]") != point_hash()


def test_the_probe_asks_only_the_chosen_skills_in_equal_shares() -> None:
    cfg = DataConfig(train_size=90, eval_size=30, image_size=64, skills=("small_text", "color", "shape"))
    assert cfg.skills == ("color", "shape", "small_text")  # the probe's order
    train, evaluation = probe_splits(cfg)
    for split, n in ((train, 90), (evaluation, 30)):
        counts = Counter(split.dataset.skills)
        assert counts == {"color": n // 3, "shape": n // 3, "small_text": n // 3}
        assert set(split.dataset.candidates) == {"color", "shape", "small_text"}
        assert all(a in split.dataset.candidates[s] for a, s in zip(split.dataset.answers,
                                                                     split.dataset.skills, strict=True))


def test_default_probe_is_unchanged_by_the_option() -> None:
    base = DataConfig(train_size=30, eval_size=12, image_size=64)
    every = base.model_copy(update={"skills": PROBE_SKILLS})
    a, b = probe_splits(base)[1].dataset, probe_splits(every)[1].dataset
    assert a.questions == b.questions and bool((a.images == b.images).all())


@pytest.mark.parametrize(("skills", "message"), [
    ("[colour, shape]", "unknown probe skill 'colour'; did you mean 'color'?"),
    ("[color, color]", "lists color more than once"),
    ("[]", "at least 1"),
])
def test_bad_skills_are_reported_at_their_line(skills: str, message: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse(POINT.format(extra=f", skills: {skills}"))
    text = str(info.value)
    assert message in text and "data.skills" in text and "line 2" in text, text


def test_a_metric_of_a_skill_not_asked_is_an_error() -> None:
    space = parse(POINT.format(extra=", skills: [color, shape]")
                  + "objectives:\n  - {metric: accuracy/small_text, direction: maximize}\n").space
    problems = check(space)
    assert any("small_text" in p.message and p.path[0] == "objectives" for p in problems), problems
    fine = parse(POINT.format(extra=", skills: [color, shape]")
                 + "objectives:\n  - {metric: accuracy/shape, direction: maximize}\n").space
    assert not check(fine)


def test_skills_need_the_probe() -> None:
    with pytest.raises(ValueError, match="benchmark 'llava' has none to choose"):
        DataConfig(benchmark="llava", path="x.json", skills=("color",))
