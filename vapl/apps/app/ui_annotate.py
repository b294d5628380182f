"""The Annotate tab: step through a folder's images, draw each prompt, save it."""

from __future__ import annotations

from argparse import Namespace

import gradio as gr

from vapl.apps.app.annotate import AnnotationError, PromptTable
from vapl.apps.app.drawing import editor_value, has_marks, prompt_from_layers
from vapl.apps.app.ui import drawing_editor, guarded, status_box
from vapl.apps.scan_io import read_scan_info


def _progress(table: PromptTable) -> str:
    done, total = table.progress()
    note = "" if table.has_csv else " (labels.csv is written at the first save)"
    return f"**{done} of {total} prompted**{note}"


def _where(table: PromptTable, index: int) -> str:
    row = table.rows[index]
    details = [f"label {row['label']}" if row.get("label") else "no label"]
    if row.get("split"):
        details.append(f"split {row['split']}")
    state = "prompted" if table.is_prompted(index) else "no prompt yet"
    return f"Image {index + 1} of {len(table)}: `{row['image']}` ({', '.join(details)}; {state})"


def build(options: Namespace) -> None:
    """The tab's components and events (inside a ``gr.Blocks`` context)."""
    state = gr.State({})
    gr.Markdown(
        "Open a folder data set (its `labels.csv`, see docs/data.md) or a folder of images. "
        "Draw each image's prompt and **Save**: the prompt PNG goes to `prompts/` and its path "
        "into the row's `prompt` cell (`labels.csv` is replaced atomically, the previous one "
        "kept as `labels.csv.bak`)."
    )
    with gr.Row(equal_height=True):
        folder = gr.Textbox(
            label="Data set folder (with labels.csv) or folder of images",
            value=options.data or "",
            elem_id="annotate-folder",
            scale=5,
        )
        open_folder = gr.Button("Open folder", elem_id="annotate-open", scale=1)
    progress = gr.Markdown(elem_id="annotate-progress")
    where = gr.Markdown(elem_id="annotate-where")
    editor = drawing_editor("annotate-editor", "Draw the prompt")
    with gr.Row():
        previous = gr.Button("← Previous", elem_id="annotate-prev")
        following = gr.Button("Next →", elem_id="annotate-next")
        first = gr.Button("First without a prompt (u)", elem_id="annotate-first")
        clear = gr.Button("Clear prompt", elem_id="annotate-clear")
        save = gr.Button("Save (s)", variant="primary", elem_id="annotate-save")
    with gr.Row():
        jump = gr.Number(label="Go to image number", value=None, precision=0, scale=1)
        status = status_box("annotate-status")

    def _show(table: PromptTable, index: int, note: str = "") -> dict:
        scan = read_scan_info(table.image_path(index), 3)
        prompt = table.read_prompt(index, tuple(scan.image.shape[-2:]))
        return {
            state: {"table": table, "index": index, "shape": tuple(scan.image.shape[-2:])},
            editor: editor_value(scan.image, prompt),
            progress: _progress(table),
            where: _where(table, index),
            status: note,
        }

    def _table(current: dict) -> PromptTable:
        if "table" not in current:
            raise AnnotationError("open a folder first")
        return current["table"]

    @guarded(status)
    def on_open(path: str) -> dict:
        table = PromptTable.open(path)
        start = table.first_unprompted()
        note = f"Opened `{table.root}`." + (" Every image has a prompt." if start is None else "")
        return _show(table, 0 if start is None else start, note)

    @guarded(status)
    def on_step(current: dict, step: int) -> dict:
        table = _table(current)
        return _show(table, (current["index"] + step) % len(table))

    @guarded(status)
    def on_first(current: dict) -> dict:
        table = _table(current)
        index = table.first_unprompted(current["index"])
        if index is None:
            return {status: "Every image has a prompt.", progress: _progress(table)}
        return _show(table, index)

    @guarded(status)
    def on_jump(number: float | None, current: dict) -> dict:
        table = _table(current)
        if number is None or not 1 <= int(number) <= len(table):
            raise AnnotationError(f"image numbers go from 1 to {len(table)}")
        return _show(table, int(number) - 1)

    @guarded(status)
    def on_clear(current: dict) -> dict:
        table = _table(current)
        scan = read_scan_info(table.image_path(current["index"]), 3)
        return {editor: editor_value(scan.image), status: "Cleared (not saved)."}

    @guarded(status)
    def on_save(value: dict, current: dict) -> dict:
        table = _table(current)
        index = current["index"]
        prompt = prompt_from_layers((value or {}).get("layers"), current["shape"])
        if not has_marks(prompt):
            raise AnnotationError("nothing drawn: paint red or yellow on the image, then save")
        path = table.save(index, prompt)
        return {
            state: {**current, "table": table},
            progress: _progress(table),
            where: _where(table, index),
            status: f"Saved `{path.relative_to(table.root)}` and `labels.csv`.",
        }

    view = [state, editor, progress, where, status]
    # Progress shows on the line above the canvas, not over the canvas: Gradio's editor can keep
    # a stale timer over itself after a new image (seen in tall windows).
    shown = {"show_progress_on": [where]}
    open_folder.click(on_open, [folder], view, **shown)
    folder.submit(on_open, [folder], view, **shown)
    previous.click(lambda current: on_step(current, -1), [state], view, **shown)
    following.click(lambda current: on_step(current, 1), [state], view, **shown)
    first.click(on_first, [state], view, **shown)
    jump.submit(on_jump, [jump, state], view, **shown)
    clear.click(on_clear, [state], [editor, status], show_progress_on=[status])
    save.click(on_save, [editor, state], [state, progress, where, status])
