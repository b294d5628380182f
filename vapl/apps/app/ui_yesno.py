"""The Yes/no tab: CRAYON's question for each training image, answered with a key."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import gradio as gr

from vapl.apps.app import answers as logic
from vapl.apps.app.predict import load_model, parse_floats
from vapl.apps.app.ui import guarded, status_box

QUESTION = "### Is the model looking at the relevant part of the image?"


def _progress(items: list, answers) -> str:
    given = sum(item.id in answers.images for item in items)
    counts = answers.counts("image")
    return (
        f"**{given} of {len(items)} answered** (yes {counts['yes']}, no {counts['no']}, "
        f"skipped {counts['maybe']})"
    )


def build(options: Namespace) -> None:
    """The tab's components and events (inside a ``gr.Blocks`` context)."""
    state = gr.State({})
    gr.Markdown(
        "For CRAYON: each training image of a folder data set with the model's Grad-CAM (the map "
        "`vapl crayon export` stores). Answers are appended to the answers file as you give "
        "them; open it again to resume. Then: `vapl crayon answer --export DIR --from FILE`."
    )
    with gr.Row(equal_height=True):
        checkpoint = gr.Textbox(
            label="Checkpoint (the original model)",
            value=options.checkpoint or "",
            elem_id="yesno-checkpoint",
        )
        folder = gr.Textbox(
            label="Data set folder (labels.csv)", value=options.data or "", elem_id="yesno-folder"
        )
        answers_file = gr.Textbox(
            label=f"Answers file (blank: FOLDER/{logic.ANSWERS_FILE})",
            value=options.answers or "",
            elem_id="yesno-answers",
        )
    with gr.Accordion("Preprocessing", open=False), gr.Row():
        mean = gr.Textbox(label="Mean (blank: the checkpoint's, else 0.5)", value=options.mean)
        std = gr.Textbox(label="Std (blank: the checkpoint's, else 0.5)", value=options.std)
    start = gr.Button("Start / resume", variant="primary", elem_id="yesno-start")
    progress = gr.Markdown(elem_id="yesno-progress")
    with gr.Row():
        image = gr.Image(label="Image", interactive=False, buttons=[], elem_id="yesno-image")
        cam = gr.Image(label="Grad-CAM", interactive=False, buttons=[], elem_id="yesno-cam")
    caption = gr.Markdown(elem_id="yesno-caption")
    gr.Markdown(QUESTION)
    with gr.Row():
        yes = gr.Button("Yes (y)", variant="primary", elem_id="yesno-yes")
        no = gr.Button("No (n)", variant="stop", elem_id="yesno-no")
        skip = gr.Button("Skip (k)", elem_id="yesno-skip")
    status = status_box("yesno-status")

    def _show(current: dict, index: int | None, note: str = "") -> dict:
        items = current["items"]
        answers = logic.load_answers(current["answers"])
        if index is None:
            return {
                state: {**current, "index": None},
                progress: _progress(items, answers),
                image: None,
                cam: None,
                caption: "",
                status: note
                + f" Every image is answered. Next: `vapl crayon answer --export DIR --from "
                f"{current['answers']}`.",
            }
        loaded = load_model(current["checkpoint"])
        item = items[index]
        shown, heat, explained = logic.item_pictures(loaded, item, **current["settings"])
        before = answers.images.get(item.id)
        again = "" if before is None else " (answered before; a new answer replaces it)"
        return {
            state: {**current, "index": index},
            progress: _progress(items, answers),
            image: shown,
            cam: heat,
            caption: f"Image {index + 1} of {len(items)}: `{item.id}`. {explained}.{again}",
            status: note,
        }

    @guarded(status)
    def on_start(path: str, root: str, answers_path: str, mean_text: str, std_text: str) -> dict:
        loaded = load_model(path)
        items = logic.training_items(root, loaded.data_settings.get("classes"))
        target = Path(answers_path.strip() or Path(root.strip()).expanduser() / logic.ANSWERS_FILE)
        answers = logic.load_answers(target)  # a malformed file stops here, before any write
        settings = {"mean": parse_floats(mean_text, "mean"), "std": parse_floats(std_text, "std")}
        current = {
            "checkpoint": str(loaded.path),
            "items": items,
            "answers": str(target),
            "settings": settings,
        }
        index = logic.first_unanswered(items, answers)
        return _show(current, index, f"Answers go to `{target}`.")

    def on_answer(word: str):
        @guarded(status)
        def answer(current: dict) -> dict:
            if current.get("index") is None:
                raise logic.AnnotationError("press Start first (or every image is answered)")
            item = current["items"][current["index"]]
            logic.append_answer(current["answers"], item.id, word)
            answers = logic.load_answers(current["answers"])
            after = logic.first_unanswered(current["items"], answers, current["index"] + 1)
            return _show(current, after, f"`{item.id}`: {word}.")

        return answer

    view = [state, progress, image, cam, caption, status]
    start.click(on_start, [checkpoint, folder, answers_file, mean, std], view)
    yes.click(on_answer("yes"), [state], view)
    no.click(on_answer("no"), [state], view)
    skip.click(on_answer("maybe"), [state], view)
