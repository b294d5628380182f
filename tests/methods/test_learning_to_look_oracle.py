"""Learning to Look with an oracle VLM: the data's explanations are the attention maps."""

from __future__ import annotations

import pytest
import torch

from datamodules.synthetic import make_synthetic_split
from vapl.core.losses import attention_kl_loss
from vapl.methods import LearningToLook


def _batch(n: int = 4) -> dict:
    data = make_synthetic_split(n, image_size=16, seed=3)
    return {
        "image": data.images,
        "label": data.labels,
        "explanation": data.explanations,
        "id": data.ids,
    }


def test_oracle_maps_are_the_explanations_and_no_vlm_is_built():
    model = LearningToLook(backbone="tiny", in_channels=1, map_source="explanation")
    model.setup("fit")
    assert model.map_generator is None  # no CLIP model, no weights file needed
    batch = _batch()
    maps, on_the_fly = model.attention_maps(batch)
    assert on_the_fly == 0
    assert torch.equal(maps, batch["explanation"])
    # the training loss is CE + lambda * KL(explanation || softmax(cam)) with that map
    model.log = lambda *args, **kwargs: None
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss) and loss > 0
    cam_shape = model.model.body(batch["image"]).shape[-2:]
    target = torch.nn.functional.adaptive_avg_pool2d(batch["explanation"][:, None], cam_shape)
    assert attention_kl_loss(torch.zeros(4, *cam_shape), target[:, 0]) > 0


def test_oracle_maps_need_explanations_and_a_known_source():
    model = LearningToLook(backbone="tiny", in_channels=1, map_source="explanation")
    batch = _batch()
    del batch["explanation"]
    with pytest.raises(ValueError, match="needs a data set whose samples have an explanation"):
        model.attention_maps(batch)
    with pytest.raises(ValueError, match="map_source is one of"):
        LearningToLook(backbone="tiny", in_channels=1, map_source="clip")
