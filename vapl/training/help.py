"""The help of ``vapl fit|validate|test|predict``: plain text, a short usage line, where to look next.

Docstrings (ours and Lightning's) are written in reST; :func:`plain_text` turns ``code``,
:class:`~a.B` roles and `links <url>`_ into plain text before argparse wraps them. The usage line
is one line instead of one per option, and the model and data arguments, which jsonargparse lists
as optional, are marked as required (a config gives them).
"""

from __future__ import annotations

import argparse
import re
import textwrap
from argparse import Action

from jsonargparse import DefaultHelpFormatter

_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`<]+?)(?:\s*<[^>]+>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<([^>]+)>`_+")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_SINGLE = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")

#: Arguments jsonargparse shows as ``Optional[...]`` that a run needs.
REQUIRED_GROUPS = {
    "model": "the method: a vapl.methods class and its init_args, usually set by a config "
    "(vapl configs lists them; vapl fit --model.help VAPL shows a method's options)",
    "data": "the data set: a datamodules class and its init_args, usually set by a config "
    "(vapl fit --data.help FolderDataModule shows a data set's options)",
}


def plain_text(text: str) -> str:
    """reST inline markup as plain text: ``code`` -> code, :class:`~a.B` -> B, :func:`a.f` ->
    a.f, `text <url>`_ -> text (url)."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1).strip()
        shown = match.group(0)
        return target.rsplit(".", 1)[-1] if "`~" in shown else target

    text = _LINK.sub(lambda m: f"{m.group(1).strip()} ({m.group(2)})", text)
    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(r"\1", text)
    return _SINGLE.sub(r"\1", text)


class VaplHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter with plain-text docstrings, a one-line usage for the
    subcommands and the model and data arguments marked as required (module docstring)."""

    def _get_help_string(self, action: Action) -> str:
        if action.dest in REQUIRED_GROUPS and action.option_strings == [f"--{action.dest}"]:
            extra = action.extra_help() if hasattr(action, "extra_help") else ""
            extra = f" ({extra.lstrip(', ')})" if extra else ""
            return f"Required: {REQUIRED_GROUPS[action.dest]}{extra}."
        return plain_text(super()._get_help_string(action))

    def _split_lines(self, text: str, width: int) -> list[str]:
        return super()._split_lines(plain_text(text), width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Paragraphs are filled; a paragraph whose lines are indented is kept as it is."""
        paragraphs = re.split(r"\n\s*\n", textwrap.dedent(plain_text(text)).strip("\n"))
        out = []
        for paragraph in paragraphs:
            if all(line.startswith(" ") for line in paragraph.splitlines()):
                out.append(textwrap.indent(paragraph, indent))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)

    def start_section(self, heading: str | None) -> None:
        super().start_section(plain_text(heading) if heading else heading)

    def _format_usage(self, usage, actions, groups, prefix) -> str:  # type: ignore[no-untyped-def]
        text = super()._format_usage(usage, actions, groups, prefix)
        if text.count("\n") <= 8:
            return text
        prog = self._prog.replace(" [options]", "")
        return f"{prefix or 'usage: '}{prog} [-h] [-c CONFIG ...] [--KEY VALUE ...]\n\n"


class PlainDescriptionFormatter(argparse.RawDescriptionHelpFormatter):
    """For vapl's own argparse commands (``vapl report --help``, ...): the description (a module
    docstring) kept as written but in plain text, and so the options' help."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return super()._fill_text(plain_text(text), width, indent)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return super()._split_lines(plain_text(text), width)


#: Titles of the argument groups of ``vapl fit --help`` (by the option that identifies the group).
GROUP_TITLES = {
    "trainer.max_epochs": "The trainer (Lightning's Trainer arguments)",
    "model": "The method (--model; vapl fit --model.help NAME shows its options)",
    "data": "The data set (--data; vapl fit --data.help NAME shows its options)",
}


def retitle_groups(parser) -> None:  # type: ignore[no-untyped-def]
    """Give the trainer, model and data groups of a subcommand parser plain titles instead of the
    first lines of their classes' docstrings."""
    for group in parser._action_groups:
        dests = {action.dest for action in group._group_actions}
        for dest, title in GROUP_TITLES.items():
            if dest in dests:
                group.title = title


#: The description of each LightningCLI subcommand in ``vapl SUBCOMMAND --help``.
SUBCOMMAND_DESCRIPTIONS = {
    "fit": "Train a method on a data set (Lightning's Trainer.fit).",
    "validate": "Evaluate a model on the validation split (--ckpt_path CKPT).",
    "test": "Evaluate a model on the test split (--ckpt_path CKPT).",
    "predict": "Predict the data's predict split with a model (--ckpt_path CKPT).",
}


def subcommand_description(name: str, data_sets: list[str]) -> str:
    """The text at the top of ``vapl NAME --help``: what it does, the bundled configs and how to
    see a method's or a data set's own options."""
    return f"""{SUBCOMMAND_DESCRIPTIONS[name]}

Configs compose left to right, a data set config first, then overlays:

    vapl {name} --config demo.yaml
    vapl {name} --config demo.yaml --config methods/baseline.yaml --trainer.max_epochs=2

Bundled data set configs (vapl configs lists them all, with the overlays): {", ".join(data_sets)}.
On a CPU, add --config cpu.yaml after folder.yaml, gender.yaml or scene.yaml.

A method's own options: vapl {name} --model.help VAPL (or Baseline, GRADIA, ...); a data set's:
vapl {name} --data.help FolderDataModule; every value a config sets: vapl {name} --config
demo.yaml --print_config. --debug (or VAPL_DEBUG=1) shows the traceback of an error."""
