"""A prompt given at test time must not give the label away: a logistic regression on the shape of
the prompts alone (area of the indispensable and precluded pixels, box and centroid of the
indispensable region) predicts the test labels no better than the majority class, within
``MARGIN``, on every bundled data set whose prompts come from annotated regions.

``MARGIN = 0.1``: the trees are generated from fixed seeds (no flakiness), and with 36 to 256 test
prompts the standard error of an accuracy near 0.5 is 0.03 to 0.08; the leaks this test exists for
are far larger (Pancreas prompted from the tumour: 1.0 against 0.5; LIDC negatives prompted with
the nearest nodule slice: 0.78; a fixture whose annotation is the class's own shape: 1.0).
"""

from __future__ import annotations

import pytest
import torch

from datamodules.prompt_leak import REGION_PROMPTS, measure
from vapl.core.leakage import leak_score, prompt_features

MARGIN = 0.1


@pytest.mark.parametrize("name", list(REGION_PROMPTS))
def test_prompts_from_annotated_regions_do_not_give_the_label_away(name, tmp_path):
    score = measure(name, tmp_path)
    assert score.n_test >= 30
    assert score.excess <= MARGIN, str(score)


def test_the_check_finds_a_leak_where_there_is_one(tmp_path):
    score = measure("pancreas-tumour", tmp_path)  # positives: the tumour; negatives: the organ
    assert score.excess > 0.3, str(score)


def test_prompt_features_by_hand():
    prompt = torch.full((1, 5, 5), -1.0)
    prompt[0, 1:3, 2:5] = 1.0  # rows 1-2, columns 2-4
    prompt[0, 4, :] = 0.0
    features = prompt_features(prompt)[0].tolist()
    assert features == pytest.approx([6 / 25, 5 / 25, 0.25, 0.5, 0.5, 1.0, 0.375, 0.75])
    assert prompt_features(torch.full((1, 4, 4), -1.0))[0].tolist() == [0.0] * 8


def test_leak_score_separates_shapes_that_differ_by_class():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(80) % 2
    prompts = torch.full((80, 12, 12), -1.0)
    for i, label in enumerate(labels.tolist()):
        y, x = torch.randint(0, 6, (2,), generator=generator).tolist()
        side = 2 if label == 0 else 5  # the class is the region's size
        prompts[i, y : y + side, x : x + side] = 1.0
    score = leak_score(prompts[:40], labels[:40], prompts[40:], labels[40:])
    assert score.accuracy == 1.0 and score.chance == 0.5
