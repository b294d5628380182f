"""The ``vapl`` command: its usage lists every command, user errors end in one message and exit
status 2 (never a traceback), and prompt files drawn in colour work through it.

The user errors run the ``vapl`` console script in subprocesses, started together to share the
cost of importing torch (about 5 s each on two loaded cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.folder_example import write_example_folder
from vapl import command
from vapl.command import COMMANDS, available_commands, main
from vapl.training.configs import (
    bundled_config_dir,
    bundled_config_names,
    data_set_config_names,
    describe_config,
)
from vapl.training.user_errors import simplify_argument_error

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("vapl")
TINY_FIT = [
    "--config",
    "cpu.yaml",
    "--data.init_args.image_size=24",
    "--model.init_args.n_masks=4",
    "--trainer.fast_dev_run=true",
    "--trainer.enable_model_summary=false",
]


# ----- the command set ---------------------------------------------------------------------------
def test_bare_vapl_and_help_list_every_command_and_the_data_set_configs(capsys):
    for argv in ([], ["--help"], ["-h"]):
        main(argv)
        out = capsys.readouterr().out
        assert "Lightning Trainer command line tool" not in out
        for name, entry in available_commands().items():
            assert any(line.split()[:1] == [name] and entry.summary in line
                       for line in out.splitlines()), name  # fmt: skip
        for config in data_set_config_names():
            assert config in out
    # the table is the one list: every documented command is in it (app when it is installed)
    assert {"fit", "validate", "test", "predict", "fit-test", "report", "benchmark"} <= set(
        COMMANDS
    )
    assert {"predict-image", "crayon", "configs", "app"} <= set(COMMANDS)


def test_an_unknown_command_prints_the_usage_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fitt", "--config", "demo.yaml"])
    assert exit_info.value.code == 2
    assert "unknown command 'fitt'" in capsys.readouterr().err


def test_vapl_configs_lists_each_bundled_config_with_its_first_comment_line(capsys):
    main(["configs"])
    out = capsys.readouterr().out
    names = bundled_config_names()
    assert "cpu.yaml" in names and "methods/baseline.yaml" in names
    for name in names:
        description = describe_config(bundled_config_dir() / name)
        assert description, f"{name} has no first comment line"
        assert f"{name}" in out and description in out
    main(["configs", "methods/vapl2"])  # one config's text
    assert "use_param_loss: false" in capsys.readouterr().out


def test_fit_help_is_plain_text_names_the_configs_and_how_to_see_a_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vapl fit [-h] [-c CONFIG ...] [--KEY VALUE ...]\n")
    for config in data_set_config_names():
        assert config in out
    assert "--model.help VAPL" in out and "--data.help FolderDataModule" in out
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:", "`_"):
        assert markup not in out, markup
    # model and data are needed, although jsonargparse types them Optional
    assert out.count("Required: the method") == 1 and out.count("Required: the data set") == 1


@pytest.mark.parametrize(
    "name",
    ["fit-test", "report", "benchmark", "results-page", "predict-image", "crayon", "configs"],
)
def test_every_command_has_plain_text_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: vapl") or "vapl fit-test" in out
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:", "`_"):
        assert markup not in out, markup


# ----- user errors -------------------------------------------------------------------------------
def test_a_nested_jsonargparse_message_becomes_one_line():
    message = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'vapl.methods.base.MethodModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'vapl.methods.VAPL':
        Parser key "n_masks":
          Expected a <class 'int'>. Got value: abc
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._namespace.Namespace'>
  Given value: NestedArg(key='n_masks', val='abc')"""
    assert simplify_argument_error(message) == (
        "model.init_args.n_masks (vapl.methods.VAPL): expected int, got 'abc'"
    )


def test_an_error_raised_in_a_dataloader_worker_is_its_own_message():
    from torch._utils import ExceptionWrapper

    from datamodules.folder_csv import FolderDataError
    from vapl.training.user_errors import user_error_message

    try:
        raise FolderDataError("labels.csv: line 3: images/a.png: file not found")
    except FolderDataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(FolderDataError) as raised:
        wrapped.reraise()
    assert "Traceback" in str(raised.value)  # what torch puts in the message
    assert user_error_message(raised.value, "fit") == (
        "labels.csv: line 3: images/a.png: file not found",
        "",
    )


def test_debug_shows_the_traceback_instead(monkeypatch, capsys):
    from vapl.training.configs import ConfigNotFoundError

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "no-such.yaml"])
    assert exit_info.value.code == 2
    assert "config 'no-such.yaml' is neither a file" in capsys.readouterr().err
    with pytest.raises(ConfigNotFoundError):
        main(["fit", "--debug", "--config", "no-such.yaml"])
    monkeypatch.setenv("VAPL_DEBUG", "1")
    with pytest.raises(ConfigNotFoundError):
        main(["fit", "--config", "no-such.yaml"])


def _paint(gray: np.ndarray, prompt: np.ndarray, indispensable: tuple, precluded: tuple):
    """An RGB drawing on a gray image: indispensable and precluded pixels painted."""
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[prompt == 1] = indispensable
    rgb[prompt == 0] = precluded
    return rgb


def _draw_prompts_in_colour(root: Path, green_row: int) -> tuple[str, dict[str, np.ndarray]]:
    """Replace every PNG prompt of an example folder by a red/yellow drawing on the image; the
    prompt of row ``green_row`` is drawn in green (says nothing). Returns its path and the
    prompts as drawn (id -> values)."""
    from vapl.core.prompt_files import read_prompt

    lines = (root / "labels.csv").read_text().splitlines()
    drawn, green = {}, ""
    for number, line in enumerate(lines[1:], start=2):
        image, _, _, prompt, _ = line.split(",")
        if not prompt.endswith(".png"):
            continue
        values = read_prompt(root / prompt, kind="gray").numpy()
        gray = np.full(values.shape, 90, dtype=np.uint8)
        colours = (
            ((0, 200, 0), (0, 200, 0)) if number == green_row else ((230, 20, 20), (250, 220, 0))
        )
        Image.fromarray(_paint(gray, values, *colours)).save(root / prompt)
        if number == green_row:
            green = prompt
        else:
            drawn[image] = values
    return green, drawn


def test_colour_drawings_in_a_folder_data_set_are_read_as_drawings(tmp_path):
    from datamodules.folder import FolderDataModule
    from vapl.core.prompt_files import EmptyPromptWarning

    root = tmp_path / "drawn"
    write_example_folder(root, n=6, image_size=16)
    green, drawn = _draw_prompts_in_colour(root, green_row=3)
    data = FolderDataModule(str(root), image_size=16, channels=1, cache=True)
    with pytest.warns(EmptyPromptWarning, match=green):
        data.setup("fit")
    checked = 0
    for split in ("train", "val", "test"):
        for sample in data.datasets[split]:
            if sample["id"] in drawn:
                np.testing.assert_array_equal(sample["prompt"].numpy(), drawn[sample["id"]])
                checked += 1
    assert checked >= 4


def _example(root: Path, **kwargs) -> Path:
    write_example_folder(root, n=6, image_size=16, **kwargs)
    return root


@pytest.fixture(scope="module")
def vapl_runs(tmp_path_factory):
    """Every case's ``vapl`` run, started together: name -> (exit status, stdout + stderr)."""
    if not SCRIPT.exists():
        pytest.skip("the vapl console script is not installed in this environment")
    base = tmp_path_factory.mktemp("vapl_runs")
    bad = _example(base / "bad")
    rows = (bad / "labels.csv").read_text().splitlines()
    rows[2] = rows[2].replace(",train,", ",trian,")  # line 3: a misspelt split
    (bad / "labels.csv").write_text("\n".join(rows) + "\n")
    prompt = rows[3].split(",")[3]  # line 4's prompt, an NPY file: now of the wrong size
    np.save(bad / prompt, -np.ones((5, 7), dtype=np.float32))
    (base / "lidc").mkdir()  # a folder, but no CT series in it
    drawn = _example(base / "drawn")
    green, _ = _draw_prompts_in_colour(drawn, green_row=3)
    folder = ["fit", "--config", "folder.yaml"]
    cases = {
        "missing root": [*folder, f"--data.init_args.root={base / 'nowhere'}", *TINY_FIT],
        "bad rows": [*folder, f"--data.init_args.root={bad}", *TINY_FIT],
        "bad lidc root": ["fit", "--config", "lidc.yaml", f"--data.init_args.root={base / 'lidc'}"],
        "bad config value": ["fit", "--config", "demo.yaml", "--model.init_args.n_masks=many"],
        "colour prompts": [*folder, f"--data.init_args.root={drawn}", *TINY_FIT],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    started = {
        name: subprocess.Popen(
            [str(SCRIPT), *args],
            cwd=base,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in cases.items()
    }
    results = {}
    for name, process in started.items():
        out, _ = process.communicate(timeout=600)
        results[name] = (process.returncode, out)
    results["green prompt"] = (0, green)
    return results


USER_ERRORS = {
    "missing root": ["root folder", "nowhere does not exist"],
    "bad rows": [
        "2 of 18 rows cannot be used",
        "line 3: images/train-00001.npy: split 'trian' is not one of train, val, test",
        "line 4: prompts/train-00002.npy: prompt is 5 x 7 pixels and does not match the image",
    ],
    "bad lidc root": ["lidc: found no cases under", "lidc"],
    "bad config value": ["model.init_args.n_masks (vapl.methods.VAPL): expected int, got 'many'"],
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_a_user_error_is_one_message_and_exit_status_2(vapl_runs, case):
    status, out = vapl_runs[case]
    assert "Traceback" not in out, out[-3000:]
    assert status == 2, out[-3000:]
    assert "vapl fit: error: " in out
    for text in USER_ERRORS[case]:
        assert text in out, out[-3000:]


def test_a_green_prompt_warns_naming_its_file_and_training_goes_on(vapl_runs):
    status, out = vapl_runs["colour prompts"]
    assert status == 0, out[-3000:]
    green = vapl_runs["green prompt"][1]
    warning = next(line for line in out.splitlines() if "EmptyPromptWarning" in line)
    assert green in warning and "no indispensable or precluded pixel" in warning


def test_the_dispatch_table_is_what_main_runs(monkeypatch):
    called = []
    monkeypatch.setitem(COMMANDS, "configs", command.Command("vapl.training.configs", "x"))
    monkeypatch.setattr("vapl.training.configs.main", lambda argv: called.append(argv))
    main(["configs", "a", "b"])
    assert called == [["a", "b"]]
