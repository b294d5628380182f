"""The VLM-guided baseline (Learning to Look): the KL term, the schedule, the map generator on a
tiny random open_clip model, the map cache, the text-to-prompt path, and the CLI end to end."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules.synthetic import make_synthetic_split
from datamodules.transforms import JointRandomFlip
from vapl.core.losses import attention_kl_loss
from vapl.core.prompts import map_to_prompt
from vapl.core.saliency import feature_map_and_logits, grad_cam_from_features, normalize_cam
from vapl.methods import LearningToLook
from vapl.methods.learning_to_look import loss_weights
from vapl.training.cli import build_cli
from vapl.vlm.cache import MapCache
from vapl.vlm.maps import (
    TINY_CLIP_NAME,
    VLMMapGenerator,
    WeightsNotFoundError,
    postprocess_maps,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_VLM = [
    f"--model.init_args.vlm_model={TINY_CLIP_NAME}",
    "--model.init_args.vlm_random_init=true",
]
FAST = [
    "--trainer.fast_dev_run=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def tiny_generator(**kwargs) -> VLMMapGenerator:
    return VLMMapGenerator(TINY_CLIP_NAME, random_init=True, **kwargs)


class CountingGenerator:
    """A generator that counts the images it is asked for."""

    def __init__(self, generator: VLMMapGenerator) -> None:
        self.generator = generator
        self.images = 0

    def identity(self) -> dict:
        return self.generator.identity()

    def key(self) -> str:
        return self.generator.key()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.images += len(images)
        return self.generator(images)


# ----- the KL term ------------------------------------------------------------------------------
def test_kl_is_zero_when_the_cam_matches_the_map():
    torch.manual_seed(0)
    cam = normalize_cam(torch.randn(3, 4, 4))
    target = 5.0 * torch.softmax(cam.flatten(1), dim=1).view_as(cam)  # any scale: a distribution
    assert attention_kl_loss(cam, target).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_kl_loss(cam, torch.rand(3, 4, 4)).item() > 1e-3


def test_kl_by_hand_and_all_zero_maps_left_out():
    cam = torch.tensor([[[0.0, 1.0]], [[0.5, 0.5]]])
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])  # the second map has no mass
    # P = (1, 0), Q = softmax(0, 1): KL = -log Q_0 = log(1 + e)
    assert attention_kl_loss(cam, target).item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    assert attention_kl_loss(cam, torch.zeros_like(target)).item() == 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_kl_is_non_negative(seed):
    generator = torch.Generator().manual_seed(seed)
    cam = torch.rand(2, 3, 3, generator=generator)
    target = torch.rand(2, 3, 3, generator=generator)
    assert attention_kl_loss(cam, target).item() >= -1e-6


def test_lambda_schedules():
    assert loss_weights(7, 0.5) == (1.0, 0.5)
    reference = {"schedule": "reference", "warmup_epochs": 2, "growth": 0.1}
    assert loss_weights(1, 0.5, warmup_phase="ce", **reference) == (1.0, 0.0)
    assert loss_weights(1, 0.5, warmup_phase="attention", **reference) == (0.0, 0.5)
    assert loss_weights(2, 0.5, **reference) == (1.0, 0.5)
    assert loss_weights(5, 0.5, **reference)[1] == pytest.approx(0.8)
    # the reference's growth by default: kl_lambda / 10 per epoch after the attention epoch; its
    # run (kl_lambda 160, attention epoch 11) has lambda 160 + 16 * 9 = 304 at epoch 20
    assert loss_weights(20, 160.0, "reference", warmup_epochs=11) == (1.0, pytest.approx(304.0))
    assert loss_weights(11, 160.0, "reference", warmup_epochs=11) == (1.0, 160.0)
    assert loss_weights(10, 160.0, "reference", warmup_epochs=11) == (1.0, 0.0)
    fixed = loss_weights(20, 160.0, "reference", warmup_epochs=11, growth=0.1)  # ours before
    assert fixed == (1.0, pytest.approx(160.9))
    with pytest.raises(ValueError, match="schedule"):
        loss_weights(0, 1.0, schedule="cosine")
    with pytest.raises(ValueError, match="warmup phase"):
        LearningToLook(backbone="tiny", in_channels=1, warmup_phase="both")


def test_learning_to_look_trains_on_the_references_relu_then_min_max_cam():
    torch.manual_seed(0)
    model = LearningToLook(backbone="tiny", in_channels=1, num_classes=2)
    assert model.hparams.cam_normalization == "relu_minmax"
    assert model.hparams.lambda_growth is None
    images, labels = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    feature_map, logits = feature_map_and_logits(model.model, images)
    rows = torch.arange(4)
    cam = model.training_cam(feature_map, logits, labels, rows)
    raw = grad_cam_from_features(feature_map, logits, labels)
    assert bool((raw < 0).any())  # the ReLU has something to do
    flat = torch.relu(raw).flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    torch.testing.assert_close(cam.flatten(1), (flat - low) / (high - low + 1e-8))
    ours = LearningToLook(backbone="tiny", in_channels=1, cam_normalization="minmax")
    assert ours.hparams.cam_normalization == "minmax"


# ----- post-processing and prompts --------------------------------------------------------------
def test_postprocessing_by_hand():
    maps = torch.zeros(1, 5, 5)
    maps[0, 2, 2], maps[0, 0, 0] = 1.0, 0.3
    thresholded = postprocess_maps(maps, threshold=0.5)
    assert thresholded[0, 0, 0] == 0 and thresholded[0, 2, 2] == 1
    dilated = postprocess_maps(maps, threshold=0.5, dilation=1)
    assert dilated.sum() == 9 and dilated[0, 1:4, 1:4].eq(1).all()
    square = torch.zeros(1, 7, 7)
    square[0, 2:5, 2:5] = 1.0
    band = postprocess_maps(square, edge_band=1)
    assert band[0, 3, 3] == 0  # the inside, away from the edge
    assert band[0, 2, 2] == 1 and band[0, 1, 3] == 1  # both sides of the boundary
    assert band[0, 0, 0] == 0


def test_map_to_prompt():
    maps = torch.tensor([[0.0, 0.2, 0.5, 0.7, 1.0]])
    assert map_to_prompt(maps, 0.7, 0.2).tolist() == [[0.0, 0.0, -1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="precluded_below"):
        map_to_prompt(maps, 0.3, 0.5)


# ----- the generator ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "similarity"])
def test_generator_returns_maps_in_unit_range_at_image_size(method):
    generator = tiny_generator(foreground="a digit", background=["the background", "a square"])
    generator.method = method
    images = make_synthetic_split(4, image_size=24, seed=1).images
    maps = generator(images)
    assert maps.shape == (4, 24, 24)
    assert maps.min() >= 0 and maps.max() <= 1
    assert maps.amax(dim=(1, 2)).eq(1).any()  # min-max normalised, not all blank
    assert generator.text_embeddings.shape[0] == 3


def test_missing_weights_give_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no CLIP weights configured.*vlm_weights"):
        VLMMapGenerator("ViT-B-16", weights=None)
    missing = tmp_path / "clip" / "ViT-B-16.bin"
    with pytest.raises(WeightsNotFoundError, match=f"{missing}: no such file.*never downloads"):
        VLMMapGenerator("ViT-B-16", weights=str(missing))
    with pytest.raises(WeightsNotFoundError, match="open_clip_pytorch_model.bin"):
        VLMMapGenerator("ViT-B-16", weights=str(tmp_path))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        VLMMapGenerator("ViT-Q-99", weights=str(missing))


def test_weights_file_and_folder_load(tmp_path):
    random = tiny_generator()
    torch.save(random.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    images = make_synthetic_split(3, image_size=16, seed=2).images
    for weights in (tmp_path / "open_clip_pytorch_model.bin", tmp_path):
        loaded = VLMMapGenerator(TINY_CLIP_NAME, weights=str(weights))
        torch.testing.assert_close(loaded(images), random(images))
        assert loaded.key() != random.key()


# ----- the cache --------------------------------------------------------------------------------
def test_cache_matches_fresh_maps_and_is_reused(tmp_path):
    data = make_synthetic_split(10, image_size=16, seed=3)
    generator = CountingGenerator(tiny_generator(foreground="a lesion"))
    cache = MapCache.build(tmp_path, generator, data, batch_size=4)
    assert generator.images == 10
    assert isinstance(cache.maps, np.memmap)
    fresh = generator.generator(data.images)
    torch.testing.assert_close(torch.from_numpy(np.array(cache.maps)), fresh)
    again = MapCache.build(tmp_path, generator, data, batch_size=4)
    assert generator.images == 10 and again.directory == cache.directory
    # by id, in any order, as a batch
    maps, on_the_fly = cache.maps_for(["s00007", "s00002"], data.images[[7, 2]], generator)
    torch.testing.assert_close(maps, fresh[[7, 2]])
    assert on_the_fly == 0 and generator.images == 10


def test_cache_is_invalidated_by_prompt_or_model_change(tmp_path):
    data = make_synthetic_split(6, image_size=16, seed=4)
    first = MapCache.build(tmp_path, tiny_generator(foreground="a lesion"), data)
    for changed in (
        tiny_generator(foreground="a marker"),
        tiny_generator(foreground="a lesion", templates=["an image of {}."]),
        VLMMapGenerator(TINY_CLIP_NAME, random_init=True, foreground="a lesion", seed=1),
        tiny_generator(foreground="a lesion", method="similarity"),
    ):
        counting = CountingGenerator(changed)
        cache = MapCache.build(tmp_path, counting, data)
        assert counting.images == 6 and cache.directory != first.directory
        torch.testing.assert_close(torch.from_numpy(np.array(cache.maps)), changed(data.images))
    assert len(list(tmp_path.iterdir())) == 5


def test_cache_follows_flips_and_computes_unknown_images(tmp_path):
    data = make_synthetic_split(4, image_size=16, seed=5)
    generator = CountingGenerator(tiny_generator())
    cache = MapCache.build(tmp_path, generator, data)
    stored = torch.from_numpy(np.array(cache.maps))
    flipped = torch.flip(data.images[1], [-1])
    assert torch.equal(cache.lookup("s00001", flipped), torch.flip(stored[1], [-1]))
    other = data.images[0] + 0.5  # an augmentation the cache cannot undo
    maps, on_the_fly = cache.maps_for(
        ["s00000", "s00002"], torch.stack([other, data.images[2]]), generator
    )
    assert on_the_fly == 1 and generator.images == 5
    torch.testing.assert_close(maps[0], generator.generator(other[None])[0])
    # the data set's augmentation is off while the cache is built, and back on afterwards
    data.transform = JointRandomFlip(p=1.0)
    assert MapCache.build(tmp_path, generator, data).directory == cache.directory
    assert isinstance(data.transform, JointRandomFlip)


def test_on_the_fly_maps_without_a_cache():
    model = LearningToLook(
        backbone="tiny", in_channels=1, vlm_model=TINY_CLIP_NAME, vlm_random_init=True
    )
    model.hparams.map_cache = False
    data = make_synthetic_split(3, image_size=16, seed=6)
    maps, on_the_fly = model.attention_maps({"image": data.images, "id": data.ids})
    assert on_the_fly == 3
    torch.testing.assert_close(maps, model.map_generator(data.images))
    assert not any("map_generator" in name for name, _ in model.named_parameters())


# ----- end to end -------------------------------------------------------------------------------
def test_learning_to_look_fast_dev_run_on_demo(tmp_path):
    cli = build_cli(
        [
            "fit",
            "--config=demo.yaml",
            "--config=methods/learning_to_look.yaml",
            *FAST,
            *TINY_VLM,
            "--model.init_args.backbone=tiny",
            f"--model.init_args.map_cache_dir={tmp_path / 'maps'}",
            "--model.init_args.foreground_prompt=a bright round lesion",
            "--data.init_args.image_size=32",
            "--data.init_args.batch_size=8",
            "--data.init_args.n_train=16",
            "--data.init_args.n_val=8",
            "--data.init_args.n_test=8",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert isinstance(cli.model, LearningToLook)
    metrics = cli.trainer.callback_metrics
    assert metrics["train/loss_attention"] > 0
    assert metrics["train/maps_on_the_fly"] == 0  # all from the cache
    (folder,) = (tmp_path / "maps").iterdir()
    assert len(MapCache(folder)) == 16


def test_learning_to_look_names_the_missing_weights(tmp_path):
    args = ["fit", "--config=demo.yaml", "--config=methods/learning_to_look.yaml", *FAST]
    args += ["--model.init_args.backbone=tiny", f"--trainer.default_root_dir={tmp_path}"]
    args += [f"--model.init_args.vlm_weights={tmp_path / 'nowhere'}"]
    with pytest.raises(WeightsNotFoundError, match="nowhere: no such file"):
        build_cli(args)


def test_text_prompts_for_vapl_fast_dev_run(tmp_path):
    size = "--data.init_args.datamodule.init_args"
    cli = build_cli(
        [
            "fit",
            "--config=demo_text_prompts.yaml",
            *FAST,
            f"{size}.image_size=32",
            f"{size}.batch_size=8",
            f"{size}.n_train=16",
            f"{size}.n_val=8",
            f"{size}.n_test=8",
            f"--data.init_args.map_cache_dir={tmp_path / 'maps'}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    data = cli.datamodule
    sample = data.datasets["train"][3]
    cache = data.datasets["train"].maps
    expected = map_to_prompt(torch.from_numpy(cache.maps[3].copy()), 0.7, 0.2)
    assert torch.equal(sample["prompt"], expected) and bool(sample["has_prompt"])
    assert len(list((tmp_path / "maps").iterdir())) == 3  # train, val, test
    assert cli.trainer.callback_metrics["train/loss"].isfinite()


def test_learning_to_look_fast_dev_run_on_decoy_mnist(tmp_path):
    from datamodules.fixtures_natural import make_mnist_tree

    root = make_mnist_tree(tmp_path / "mnist", n_train=40, n_test=16)
    cli = build_cli(
        [
            "fit",
            "--config=decoy_mnist.yaml",
            f"--data.init_args.root={root}",
            "--data.init_args.batch_size=8",
            "--config=methods/learning_to_look.yaml",
            *FAST,
            *TINY_VLM,
            "--model.init_args.backbone=tiny",
            "--model.init_args.foreground_prompt=a digit",
            f"--model.init_args.map_cache_dir={tmp_path / 'maps'}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.trainer.callback_metrics["train/loss_attention"] >= 0
