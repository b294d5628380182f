"""The Predict tab: a checkpoint, an image, a drawn prompt -> both predictions and the pictures."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import gradio as gr

from vapl.apps.app import predict as logic
from vapl.apps.app.drawing import editor_value, prompt_from_layers
from vapl.apps.app.ui import drawing_editor, guarded, status_box
from vapl.apps.scan_io import WINDOW_PRESETS

AS_STORED = "as stored"
CUSTOM = "custom"
WINDOW_CHOICES = [AS_STORED, *WINDOW_PRESETS, CUSTOM]
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".npy", ".dcm", ".dicom", ".ima", ".nii", ".gz"]
NO_PICTURE_BUTTONS = ["download", "fullscreen"]


def _layers(value: dict | None) -> list:
    return list((value or {}).get("layers") or [])


def _window(preset: str, level: float | None, width: float | None) -> tuple[float, float] | None:
    if preset in WINDOW_PRESETS:
        return WINDOW_PRESETS[preset]
    if preset == CUSTOM:
        if level is None or width is None:
            raise logic.AppInputError("custom window: give a level and a width")
        return float(level), float(width)
    return None


def build(options: Namespace) -> None:
    """The tab's components and events (inside a ``gr.Blocks`` context)."""
    state = gr.State({})
    gr.Markdown(
        "Load a checkpoint of any vapl method, open an image, draw a prompt and press "
        "**Predict**. The prediction is the one `vapl predict-image` gives on the same files."
    )
    with gr.Row(equal_height=True):
        checkpoint = gr.Textbox(
            label="Checkpoint (.ckpt)",
            value=options.checkpoint or "",
            placeholder="runs/.../checkpoints/epoch=....ckpt",
            elem_id="predict-checkpoint",
            scale=5,
        )
        upload_checkpoint = gr.UploadButton("Upload…", file_types=[".ckpt"], scale=1)
        load = gr.Button("Load model", elem_id="predict-load", scale=1)
    model_info = gr.Markdown(elem_id="predict-model")
    with gr.Row(equal_height=True):
        image_path = gr.Textbox(
            label="Image: PNG, JPEG, NPY, DICOM file, DICOM series folder or NIfTI volume",
            value=options.image or "",
            elem_id="predict-image",
            scale=5,
        )
        upload_image = gr.UploadButton("Upload…", file_types=IMAGE_TYPES, scale=1)
        open_image = gr.Button("Open image", elem_id="predict-open", scale=1)
    with gr.Row():
        slice_index = gr.Slider(0, 1, value=0, step=1, label="Slice", visible=False)
        preset = gr.Radio(WINDOW_CHOICES, value=AS_STORED, label="Window", visible=False)
        level = gr.Number(label="Level (HU)", visible=False)
        width = gr.Number(label="Width (HU)", visible=False)
    with gr.Accordion("Preprocessing, class names, export folder", open=False), gr.Row():
        mean = gr.Textbox(label="Mean (blank: the checkpoint's, else 0.5)", value=options.mean)
        std = gr.Textbox(label="Std (blank: the checkpoint's, else 0.5)", value=options.std)
        classes = gr.Textbox(label="Class names, comma-separated", value=options.classes)
        out = gr.Textbox(label="Export folder", value=str(options.out))
    with gr.Row():
        with gr.Column(scale=3):
            editor = drawing_editor("predict-editor", "Draw the prompt")
            with gr.Row():
                clear = gr.Button("Clear prompt", elem_id="predict-clear")
                run = gr.Button("Predict", variant="primary", elem_id="predict-run")
        with gr.Column(scale=2):
            status = status_box("predict-status")
            with_prompt = gr.Label(label="With the prompt", elem_id="pred-with")
            without_prompt = gr.Label(label="Without the prompt", elem_id="pred-without")
    tiles = gr.Gallery(
        label="Image, prompt, refined prompt, Grad-CAM of each head",
        columns=5,
        height=300,
        object_fit="contain",
        buttons=NO_PICTURE_BUTTONS,
        elem_id="predict-tiles",
    )
    gr.Image(
        value=logic.colour_bar(512, 24),
        label="Refined prompt colour scale: 0 (left, white: removed) to 1 (right, dark blue: kept)",
        height=70,
        interactive=False,
        buttons=[],
    )
    with gr.Row():
        save_prompt = gr.Button("Save prompt (PNG)", elem_id="predict-save-prompt")
        save_result = gr.Button("Save result (JSON)", elem_id="predict-save-result")
    saved = gr.File(label="Saved files", file_count="multiple", interactive=False, height=120)
    command = gr.Code(label="The same prediction on the command line", language="shell")
    result_json = gr.JSON(label="Result: the JSON of vapl predict-image", elem_id="predict-json")

    outputs_cleared = {with_prompt: None, without_prompt: None, tiles: None, result_json: None}

    @guarded(status)
    def on_load(path: str, current: dict) -> dict:
        loaded = logic.load_model(path)
        return {
            model_info: loaded.describe(),
            state: {**current, "checkpoint": str(loaded.path)},
            status: f"Loaded {loaded.name}.",
        }

    @guarded(status)
    def on_upload_checkpoint(file: Any, current: dict) -> dict:
        return {checkpoint: str(file), **on_load(str(file), current)}

    def _show(path: str, current: dict, window, index, keep_layers=None) -> dict:
        scan = logic.open_scan(path, 3, window, index)
        grey = scan.image.shape[0] == 3 and bool((scan.image[0] == scan.image[1]).all())
        windowed = scan.kind in ("dicom", "series", "nifti") and grey
        value = editor_value(scan.image)
        if keep_layers:
            value["layers"] = keep_layers
        kept = {k: v for k, v in current.items() if k not in ("result", "prompt")}
        return {
            editor: value,
            state: {**kept, "image": str(scan.path), "window": window, "slice": scan.slice_index},
            slice_index: gr.update(
                visible=scan.slices > 1, maximum=max(scan.slices - 1, 1), value=scan.slice_index
            ),
            preset: gr.update(visible=windowed),
            level: gr.update(visible=windowed, value=scan.window[0] if scan.window else None),
            width: gr.update(visible=windowed, value=scan.window[1] if scan.window else None),
            status: f"Opened `{scan.path}` ({scan.image.shape[2]} x {scan.image.shape[1]} px"
            + (f", slice {scan.slice_index} of {scan.slices}" if scan.slices > 1 else "")
            + (f", window {scan.window[0]:g} / {scan.window[1]:g}" if scan.window else "")
            + ").",
            command: "",
            **outputs_cleared,
        }

    @guarded(status)
    def on_open(path: str, current: dict) -> dict:
        shown = _show(path, current, None, None)
        shown[preset] = gr.update(visible=shown[preset]["visible"], value=AS_STORED)
        return shown

    @guarded(status)
    def on_upload_image(file: Any, current: dict) -> dict:
        return {image_path: str(file), **on_open(str(file), current)}

    @guarded(status)
    def on_slice(index: float, current: dict) -> dict:
        if "image" not in current:
            raise logic.AppInputError("open an image first")
        return _show(current["image"], current, current.get("window"), int(index))

    @guarded(status)
    def on_window(choice: str, centre, span, value: dict, current: dict) -> dict:
        if "image" not in current:
            raise logic.AppInputError("open an image first")
        window = _window(choice, centre, span)
        shown = _show(current["image"], current, window, current.get("slice"), _layers(value))
        shown[preset] = gr.update(value=choice)
        return shown

    @guarded(status)
    def on_clear(current: dict) -> dict:
        if "image" not in current:
            raise logic.AppInputError("open an image first")
        scan = logic.open_scan(current["image"], 3, current.get("window"), current.get("slice"))
        return {editor: editor_value(scan.image), status: "Prompt cleared."}

    @guarded(status)
    def on_predict(value: dict, current: dict, mean_text, std_text, names_text) -> dict:
        if "image" not in current:
            raise logic.AppInputError("open an image first: there is nothing to predict on")
        loaded = logic.load_model(current.get("checkpoint") or "")
        scan = logic.open_scan(
            current["image"], loaded.channels, current.get("window"), current.get("slice")
        )
        settings = {
            "mean": logic.parse_floats(mean_text, "mean"),
            "std": logic.parse_floats(std_text, "std"),
        }
        names = logic.parse_names(names_text)
        result, prompt = logic.predict_drawing(loaded, scan, _layers(value), names, **settings)
        return {
            state: {**current, "result": result, "prompt": prompt},
            with_prompt: logic.probabilities(result, prompted=True),
            without_prompt: logic.probabilities(result, prompted=False),
            tiles: logic.result_pictures(result),
            result_json: result.as_dict(),
            status: logic.summary_text(result),
            command: logic.command_line(loaded.path, scan, None, names, **settings)
            + ("  # add --prompt with the saved prompt" if prompt is not None else ""),
        }

    @guarded(status)
    def on_save_prompt(value: dict, current: dict, folder: str, mean_text, std_text, names_text):
        if "image" not in current:
            raise logic.AppInputError("open an image first: a prompt needs an image under it")
        scan = logic.open_scan(current["image"], 1, current.get("window"), current.get("slice"))
        prompt = prompt_from_layers(_layers(value), scan.image.shape[-2:])
        path = logic.export_prompt(prompt, folder, logic.file_stem(scan))
        names = logic.parse_names(names_text)
        settings = {
            "mean": logic.parse_floats(mean_text, "mean"),
            "std": logic.parse_floats(std_text, "std"),
        }
        line = logic.command_line(
            current.get("checkpoint") or "CKPT", scan, path, names, **settings
        )
        return {saved: [str(path)], status: f"Prompt saved to `{path}`.", command: line}

    @guarded(status)
    def on_save_result(current: dict, folder: str) -> dict:
        if "result" not in current:
            raise logic.AppInputError("nothing to save yet: press Predict first")
        scan = logic.open_scan(current["image"], 1, current.get("window"), current.get("slice"))
        path = logic.export_result(current["result"], folder, logic.file_stem(scan))
        return {saved: [str(path)], status: f"Result saved to `{path}`."}

    view = [editor, state, slice_index, preset, level, width, status, command]
    view += list(outputs_cleared)
    # Progress shows on the status line, not over the canvas: Gradio's editor can keep a stale
    # timer over itself after a new image (seen in tall windows).
    quiet = {"show_progress_on": [status]}
    load.click(on_load, [checkpoint, state], [model_info, state, status])
    checkpoint.submit(on_load, [checkpoint, state], [model_info, state, status])
    upload_checkpoint.upload(
        on_upload_checkpoint, [upload_checkpoint, state], [checkpoint, model_info, state, status]
    )
    open_image.click(on_open, [image_path, state], view, **quiet)
    image_path.submit(on_open, [image_path, state], view, **quiet)
    upload_image.upload(on_upload_image, [upload_image, state], [image_path, *view], **quiet)
    slice_index.release(on_slice, [slice_index, state], view, **quiet)
    preset.input(on_window, [preset, level, width, editor, state], view, **quiet)
    for number in (level, width):
        custom = [gr.State(CUSTOM), level, width, editor, state]
        number.submit(on_window, custom, view, **quiet)
    clear.click(on_clear, [state], [editor, status], **quiet)
    run.click(
        on_predict,
        [editor, state, mean, std, classes],
        [state, with_prompt, without_prompt, tiles, result_json, status, command],
        show_progress_on=[with_prompt, without_prompt, tiles],
    )
    save_prompt.click(
        on_save_prompt, [editor, state, out, mean, std, classes], [saved, status, command]
    )
    save_result.click(on_save_result, [state, out], [saved, status])
