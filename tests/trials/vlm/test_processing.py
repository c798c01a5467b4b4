"""An expert's input prepared as its checkpoint's processor says (mean/std, resize + centre crop),
LLaVA's pad-to-square, and the family defaults when a checkpoint ships no processor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search_space.point import ExpertConfig
from trials.data.images import ImageFiles
from trials.vlm.experts import CLIP_MEAN, CLIP_STD, Expert

MEAN, STD = [0.25, 0.5, 0.75], [0.5, 0.25, 0.125]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    Expert(ExpertConfig(source="tiny-clip")).model.save_pretrained(tmp_path)
    return tmp_path


def _processor(folder: Path, **fields: object) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "image_mean": MEAN, "image_std": STD, **fields}))


def test_without_a_processor_the_family_defaults_apply(checkpoint: Path) -> None:
    expert = Expert(ExpertConfig(source=str(checkpoint)))
    assert expert.processing.file is None and expert.processing.mean == CLIP_MEAN
    assert expert.processing.std == CLIP_STD and "+processor" not in expert.identity


def test_the_processors_mean_and_std_normalise(checkpoint: Path) -> None:
    _processor(checkpoint)
    expert = Expert(ExpertConfig(source=str(checkpoint)))
    grey = torch.full((1, 3, 32, 32), 153, dtype=torch.uint8)  # 0.6
    x = expert.preprocess(grey)
    expected = torch.tensor([(0.6 - m) / s for m, s in zip(MEAN, STD, strict=True)])
    torch.testing.assert_close(x[0, :, 5, 5], expected, rtol=1e-5, atol=1e-5)
    assert "+processor#" in expert.identity  # cached features follow the processor


def test_a_centre_crop_keeps_the_middle(checkpoint: Path) -> None:
    """resize 256 / crop 128 on a square: the outer quarter on each side is cut away."""
    _processor(checkpoint, size={"shortest_edge": 256}, crop_size={"height": 128, "width": 128},
               do_center_crop=True)
    expert = Expert(ExpertConfig(source=str(checkpoint)))
    side = expert.image_size
    assert expert.processing.crop_ratio == 0.5
    image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    image[..., 16:48, 16:48] = 255  # a white middle half in a black frame
    x = expert.preprocess(image) * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert x.shape[-1] == side and float(x[..., 2:-2, 2:-2].min()) > 0.95  # only the white middle
    whole = Expert(ExpertConfig(source="tiny-clip")).preprocess(image)  # no crop: the frame stays
    assert float(whole[..., :2, :].max()) < -1


def test_a_broken_processor_file_is_named(checkpoint: Path) -> None:
    (checkpoint / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"preprocessor_config\.json holds a JSON list"):
        Expert(ExpertConfig(source=str(checkpoint)))


def test_pad_to_square_centres_the_image_on_the_mean_colour(tmp_path: Path) -> None:
    file = tmp_path / "wide.png"
    Image.fromarray(np.full((10, 40, 3), 255, dtype=np.uint8)).save(file)  # 40 wide, 10 high
    padded = ImageFiles([file], 40, pad=(10, 20, 30))[0]  # (3, 40, 40)
    assert padded[:, 0, 20].tolist() == [10, 20, 30] and padded[:, 20, 20].tolist() == [255] * 3
    squashed = ImageFiles([file], 40)[0]
    assert squashed[:, 0, 20].tolist() == [255] * 3
