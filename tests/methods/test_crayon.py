"""The Yes-No baselines (CRAYON): the attention terms, pruning, answers files, the oracle, and the
three stages (export, answer, fine-tune) through the ``vapl`` command line."""

from __future__ import annotations

import glob
import logging
import math

import pytest
import torch

from vapl.command import main
from vapl.core.yesno import (
    MAYBE,
    NO,
    YES,
    AnswerError,
    Answers,
    irrelevant_term,
    map_overlap,
    oracle_answers,
    patch_box,
    patch_overlap,
    peak_cells,
    read_answers,
    relevant_term,
    scale_to_max,
    write_answers,
    yesno_attention_loss,
)
from vapl.methods import CRAYON, CRAYONAttention, CRAYONPruning
from vapl.training.cli import build_cli

QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]
TINY_DATA = [
    "--data.init_args.image_size=32",
    "--data.init_args.n_train=32",
    "--data.init_args.n_val=8",
    "--data.init_args.n_test=8",
    "--data.init_args.batch_size=8",
    *QUIET,
]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


# ----- the two attention terms -------------------------------------------------------------------
def test_the_two_terms_on_hand_made_maps():
    cam = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [1.0, 0.0]]])
    stored = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    # relevant: sum(A (1 - A0)) / sum(1 - A0); irrelevant: sum(A A0) / sum(A0)
    torch.testing.assert_close(relevant_term(cam, stored), torch.tensor([0.0 / 2, 1.5 / 3]))
    torch.testing.assert_close(irrelevant_term(cam, stored), torch.tensor([1.0 / 2, 0.5 / 1]))
    # soft stored maps weigh each cell
    soft = torch.tensor([[[0.5, 0.25], [0.25, 0.0]]])
    full = torch.ones(1, 2, 2)
    torch.testing.assert_close(relevant_term(full, soft), torch.tensor([3.0 / 3.0]))
    torch.testing.assert_close(irrelevant_term(cam[:1], soft), torch.tensor([0.5 / 1.0]))


def test_yes_images_get_the_relevant_term_no_images_the_irrelevant_maybe_nothing():
    cam = torch.tensor(
        [[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]
    )
    stored = torch.tensor(
        [[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0, 0]]]
    )
    codes = torch.tensor([YES, NO, MAYBE], dtype=torch.int8)
    loss_yes, loss_no = yesno_attention_loss(cam, stored, codes, 2.0, 3.0)
    torch.testing.assert_close(loss_yes, torch.tensor(2.0 * 0.0))
    torch.testing.assert_close(loss_no, torch.tensor(3.0 * 0.5))
    loss_yes, loss_no = yesno_attention_loss(cam, stored, torch.tensor([NO, YES, MAYBE]), 2.0, 3.0)
    torch.testing.assert_close(loss_yes, torch.tensor(2.0 * 0.5))
    torch.testing.assert_close(loss_no, torch.tensor(3.0 * 0.5))


def test_scale_to_max_is_relu_then_peak_one():
    maps = torch.tensor([[[-2.0, 1.0], [4.0, 2.0]]])
    torch.testing.assert_close(scale_to_max(maps, eps=0.0), torch.tensor([[[0.0, 0.25], [1, 0.5]]]))


def test_attention_weights_are_divided_by_the_answer_counts(tmp_path):
    ids = [f"i{k}" for k in range(5)]
    torch.save({"ids": ids, "maps": torch.rand(5, 8, 8)}, tmp_path / "maps.pt")
    answers = Answers(images={"i0": YES, "i1": NO, "i2": NO, "i3": NO, "i4": MAYBE})
    write_answers(tmp_path / "answers.csv", answers)
    module = CRAYONAttention(
        in_channels=1, backbone="tiny", answers=str(tmp_path / "answers.csv"), alpha=6, beta=6
    )
    module.setup("fit")
    assert (module.alpha_per_answer, module.beta_per_answer) == (6.0, 2.0)
    codes, maps = module.stored_for(["i3", "unknown", "i0"])
    assert codes.tolist() == [NO, MAYBE, YES]
    assert torch.equal(maps[0], module.stored_maps[3])


# ----- pruning -------------------------------------------------------------------------------------
def test_a_pruned_neuron_has_exactly_zero_effect_on_the_logits():
    torch.manual_seed(0)
    module = CRAYONPruning(in_channels=1, backbone="tiny").eval()
    images = torch.randn(4, 1, 32, 32)
    module.neuron_mask.mask[5] = 0.0
    before = module(images)
    last_conv = [m for m in module.model.body if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last_conv.weight[5] += 10 * torch.randn_like(last_conv.weight[5])
    assert torch.equal(module(images), before)
    with torch.no_grad():  # a kept neuron does change them: the test can fail
        last_conv.weight[6] += 10 * torch.randn_like(last_conv.weight[6])
    assert not torch.allclose(module(images), before)


def test_pruning_retrains_only_the_fc_and_the_mask_survives_save_and_load(
    tmp_path, tiny_trainer, tiny_data
):
    answers = Answers(neurons={0: NO, 3: NO, 7: YES, 9: MAYBE})
    write_answers(tmp_path / "answers.csv", answers)
    module = CRAYONPruning(
        in_channels=1, backbone="tiny", lr=0.01, answers=str(tmp_path / "answers.csv")
    )
    body_before = {k: v.clone() for k, v in module.model.body.state_dict().items()}
    fc_before = module.model.fc.weight.detach().clone()
    trainer = tiny_trainer(max_steps=2, inference_mode=False)
    data = tiny_data(n_train=16, n_val=4, n_test=4, image_size=32)
    trainer.fit(module, datamodule=data)
    expected = torch.ones(64)
    expected[[0, 3]] = 0.0
    assert torch.equal(module.neuron_mask.mask, expected)
    for key, value in module.model.body.state_dict().items():
        if not key.endswith(".mask"):
            assert torch.equal(value, body_before[key]), key  # weights and BN statistics frozen
    assert not torch.equal(module.model.fc.weight, fc_before)

    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(path)
    (tmp_path / "answers.csv").unlink()  # the checkpoint alone must carry the mask
    loaded = CRAYONPruning.load_from_checkpoint(path)
    assert torch.equal(loaded.neuron_mask.mask, expected)
    images = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded.eval()(images), module.eval()(images))


def test_both_together_masks_the_grad_cam_of_pruned_channels():
    from vapl.core.saliency import feature_map_and_logits

    torch.manual_seed(0)
    module = CRAYON(in_channels=1, backbone="tiny").eval()
    module.neuron_mask.mask[:32] = 0.0
    feature_map, _ = feature_map_and_logits(module.model, torch.randn(2, 1, 32, 32))
    assert torch.count_nonzero(feature_map[:, :32]) == 0
    assert torch.count_nonzero(feature_map[:, 32:]) > 0


# ----- answers files -------------------------------------------------------------------------------
def _answers_file(tmp_path, *lines: str):
    path = tmp_path / "answers.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_answers_round_trip_and_neuron_mask(tmp_path):
    path = _answers_file(
        tmp_path, "kind,key,answer", "# a comment", "image,a,YES", "image,b,no", "neuron,2,no", ""
    )
    answers = read_answers(path, image_ids=["a", "b", "c"], num_neurons=4)
    assert answers.images == {"a": YES, "b": NO}
    assert answers.image_codes(["c", "b", "a"]).tolist() == [MAYBE, NO, YES]
    assert answers.neuron_mask(4).tolist() == [1.0, 1.0, 0.0, 1.0]
    write_answers(tmp_path / "again.csv", answers)
    assert read_answers(tmp_path / "again.csv") == answers


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("image,zzz,yes", r"line 3: unknown image id 'zzz'"),
        ("image,a,perhaps", r"line 3: unknown answer 'perhaps'"),
        ("neuron,64,no", r"line 3: neuron index 64 is out of range \(the layer has 64 neurons\)"),
        ("neuron,-1,no", r"line 3: neuron index -1 is out of range"),
        ("neuron,x,no", r"line 3: neuron index 'x' is not an integer"),
        ("pixel,a,yes", r"line 3: unknown kind 'pixel'"),
        ("image,a", r"line 3: expected 3 fields"),
    ],
)
def test_bad_answers_files_name_the_line(tmp_path, bad_line, message):
    path = _answers_file(tmp_path, "kind,key,answer", "image,a,no", bad_line)
    with pytest.raises(AnswerError, match=message) as error:
        read_answers(path, image_ids=["a", "b"], num_neurons=64)
    assert str(path) in str(error.value)


def test_answers_file_without_header_is_refused(tmp_path):
    with pytest.raises(AnswerError, match="line 1: expected the header"):
        read_answers(_answers_file(tmp_path, "image,a,yes"))


# ----- concepts and the oracle ---------------------------------------------------------------------
def test_peak_cells_and_patch_boxes():
    activations = torch.zeros(1, 2, 3, 4)
    activations[0, 0, 2, 1] = 5.0
    activations[0, 1, 0, 3] = 2.0
    values, cells = peak_cells(activations)
    assert values.tolist() == [[5.0, 2.0]] and cells.tolist() == [[[2, 1], [0, 3]]]
    assert patch_box(torch.tensor([2, 1]), 4, 8, (12, 16)) == (4, 2, 12, 10)
    assert patch_box(torch.tensor([0, 3]), 4, 8, (12, 16)) == (0, 8, 8, 16)  # clipped


def test_oracle_scores_and_answers():
    stored = torch.zeros(3, 2, 2)
    stored[0, 0, 0] = 1.0  # all mass top-left
    stored[1] = 1.0  # spread evenly
    explanation = torch.zeros(3, 4, 4)
    explanation[:2, :2, :2] = 1.0  # the top-left quarter; the third sample has none
    scores = map_overlap(stored, explanation)
    # bilinear upsampling of the one-hot cell puts (1 + 0.75) / 2 = 0.875 of each axis inside
    torch.testing.assert_close(scores[:2], torch.tensor([0.875**2, 0.25]))
    assert math.isnan(float(scores[2]))
    assert oracle_answers(scores, 0.5).tolist() == [YES, NO, MAYBE]
    assert patch_overlap(explanation[0], (0, 0, 2, 4)) == 0.5


# ----- the three stages through the command line --------------------------------------------------
def _fit_baseline(root, extra=()):
    cli = build_cli(
        [
            "fit",
            "--config",
            "demo.yaml",
            "--config",
            "methods/baseline.yaml",
            "--model.init_args.backbone=tiny",
            f"--trainer.default_root_dir={root}",
            *extra,
        ]
    )
    return cli, glob.glob(f"{root}/**/*.ckpt", recursive=True)[0]


def test_three_stages_through_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, checkpoint = _fit_baseline(tmp_path / "base", ["--trainer.max_epochs=1", *TINY_DATA])
    export_dir = tmp_path / "crayon"
    main(
        [
            "crayon",
            "export",
            "--checkpoint",
            checkpoint,
            "--out",
            str(export_dir),
            "--top-k",
            "5",
            "--config",
            "demo.yaml",
            "--model.init_args.backbone=tiny",
            *TINY_DATA,
        ]
    )
    exported = torch.load(export_dir / "maps.pt", weights_only=True)
    assert exported["maps"].shape == (32, 8, 8) and len(exported["ids"]) == 32
    torch.testing.assert_close(exported["maps"].flatten(1).max(1).values, torch.ones(32))
    assert exported["concept_images"].shape == (64, 5)
    assert exported["explanations"].shape == (32, 32, 32)
    assert len(list((export_dir / "pictures" / "images").glob("*.png"))) == 32
    assert len(list((export_dir / "pictures" / "neurons").glob("*.png"))) == 64

    # a human file: the template, imported and checked
    main(["crayon", "answer", "--export", str(export_dir), "--from",
          str(export_dir / "answers_template.csv"), "--out", str(tmp_path / "human.csv")])  # fmt: skip
    assert set(read_answers(tmp_path / "human.csv").images.values()) == {MAYBE}
    bad = _answers_file(tmp_path, "kind,key,answer", "neuron,99,no")
    with pytest.raises(SystemExit) as exit_info:
        main(["crayon", "answer", "--export", str(export_dir), "--from", str(bad)])
    assert exit_info.value.code == 2
    assert "line 2: neuron index 99 is out of range" in capsys.readouterr().err

    main(["crayon", "answer", "--export", str(export_dir), "--oracle", "--threshold", "0.2"])
    answers = read_answers(export_dir / "answers.csv")
    assert len(answers.images) == 32 and len(answers.neurons) == 64
    assert "written to" in capsys.readouterr().out

    for overlay, cls in (
        ("crayon_attention", CRAYONAttention),
        ("crayon_pruning", CRAYONPruning),
        ("crayon", CRAYON),
    ):
        cli = build_cli(
            [
                "fit",
                "--config",
                "demo.yaml",
                "--config",
                f"methods/{overlay}.yaml",
                "--model.init_args.backbone=tiny",
                f"--model.init_args.answers={export_dir / 'answers.csv'}",
                f"--model.init_args.init_checkpoint={checkpoint}",
                "--trainer.fast_dev_run=true",
                *TINY_DATA,
            ]
        )
        assert type(cli.model) is cls
        if cls is not CRAYONAttention:
            assert torch.equal(cli.model.neuron_mask.mask, answers.neuron_mask(64))
        assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_export_refuses_a_checkpoint_of_another_backbone(tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit"):
        main(["crayon", "export", "--checkpoint", str(tmp_path / "other.pt"), "--out",
              str(tmp_path / "x"), "--config", "demo.yaml", "--model.init_args.backbone=tiny",
              *TINY_DATA])  # fmt: skip


@pytest.mark.slow
def test_oracle_answers_make_crayon_attention_beat_its_baseline(tmp_path, monkeypatch):
    """The demo data with the corner marker agreeing with the label in 90% of the training and
    validation images (and at random in test): the Baseline leans on the marker."""
    monkeypatch.chdir(tmp_path)
    data = [
        "--data.init_args.image_size=32",
        "--data.init_args.n_train=256",
        "--data.init_args.n_val=32",
        "--data.init_args.n_test=256",
        "--data.init_args.shortcut=0.9",
        "--data.init_args.lesion_contrast=2.0",
        "--data.init_args.batch_size=16",
        *QUIET,
    ]
    base, checkpoint = _fit_baseline(
        tmp_path / "base", ["--model.init_args.lr=0.003", "--trainer.max_epochs=12", *data]
    )
    baseline_acc = base.trainer.test(base.model, datamodule=base.datamodule, verbose=False)[0][
        "test/acc"
    ]
    export_dir = tmp_path / "crayon"
    main(["crayon", "export", "--checkpoint", checkpoint, "--out", str(export_dir),
          "--no-pictures", "--config", "demo.yaml", "--model.init_args.backbone=tiny", *data])  # fmt: skip
    main(["crayon", "answer", "--export", str(export_dir), "--oracle", "--threshold", "0.2"])
    cli = build_cli(
        [
            "fit",
            "--config",
            "demo.yaml",
            "--config",
            "methods/crayon_attention.yaml",
            "--model.init_args.backbone=tiny",
            "--model.init_args.lr=0.0003",
            f"--model.init_args.answers={export_dir / 'answers.csv'}",
            f"--model.init_args.init_checkpoint={checkpoint}",
            "--trainer.max_epochs=6",
            "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={tmp_path / 'crayon_run'}",
            *data,
        ]
    )
    crayon_acc = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0][
        "test/acc"
    ]
    print(f"test accuracy: Baseline {baseline_acc:.3f}, CRAYON-Attention {crayon_acc:.3f}")
    assert crayon_acc > baseline_acc + 0.1
