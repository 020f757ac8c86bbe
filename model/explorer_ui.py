"""The explorer's page in Gradio (the `explore` extra): layout and wiring, no model logic.

Every control calls one method of model/explorer.py's Explorer; an ExplorerError (a bad
upload, a value out of range sent by a hand-made request) becomes a line in the page's
status and leaves the face and the session as they were. All events share one queue slot
(`concurrency_id`), so one face is decoded at a time: memory stays bounded and two cores
are not oversubscribed. Uploads reach the library as bytes (gr.File type "binary"), never
as a path; Gradio refuses files over UPLOAD_LIMITS' size before they are stored whole.
"""

from __future__ import annotations

import dataclasses
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home before import

import gradio as gr

from facevae.model import explorer as ex
from facevae.model.console import short

logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up probe of its own URL

QUEUE = "explorer"  # the one concurrency slot every event shares
MAX_QUEUED = 64  # requests waiting beyond this are refused by Gradio
CACHE = (120, 120)  # Gradio's cache of shown images: every 2 min, files older than 2 min
# The sliders scroll beside the face; faces scaled by the browser stay pixel-sharp.
CSS = """
#controls { max-height: 88vh; overflow-y: auto; }
#face img, #original img { image-rendering: pixelated; }
"""
# System fonts: the default theme's Google Fonts would be fetched by every browser.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)


@dataclasses.dataclass
class Server:
    url: str
    blocks: gr.Blocks

    def close(self) -> None:
        self.blocks.close()


def _refused(error: Exception) -> str:
    return f"**Refused:** {short(error, 300)}"


def build(explorer: ex.Explorer) -> gr.Blocks:
    """The page: the big face, buttons for new faces and the walk's target, an upload, and
    one slider per Explorer.sliders entry (temperature, walk, attributes, dimensions)."""
    first = explorer.new_session()
    blocks = gr.Blocks(title="facevae explorer", analytics_enabled=False, delete_cache=CACHE)
    with blocks:
        gr.Markdown(f"## facevae latent-space explorer: `{explorer.config.workdir}`")
        gr.Markdown(explorer.summary(), elem_id="summary")
        state = gr.State(first)
        with gr.Row():
            with gr.Column(scale=3):
                face = gr.Image(explorer.image(first, explorer.defaults()), label="face",
                                type="numpy", format="png", interactive=False, buttons=[],
                                height=ex.DISPLAY_SIDE, elem_id="face")  # fmt: skip
                caption = gr.Markdown(_caption(first), elem_id="caption")
                status = gr.Markdown("", elem_id="status")
                with gr.Row():
                    prior = gr.Radio([(ex.LABELS[p], p) for p in explorer.priors], value="normal",
                                     label="random faces from", elem_id="prior")  # fmt: skip
                with gr.Row():
                    new_face = gr.Button("random face", elem_id="random-face")
                    test_face = gr.Button("next test image", elem_id="test-face")
                    reset = gr.Button("reset sliders", elem_id="reset")
                with gr.Row():
                    random_target = gr.Button("walk target: random face")
                    test_target = gr.Button("walk target: next test image")
                with gr.Row():
                    upload = gr.File(label="upload a photo (cropped and resized as the dataset)",
                                     type="binary", elem_id="upload")  # fmt: skip
                    original = gr.Image(explorer.original(first), label="encoded from",
                                        type="numpy", format="png", interactive=False,
                                        buttons=[], elem_id="original")  # fmt: skip
            with gr.Column(scale=2, elem_id="controls"):
                sliders = _sliders(explorer)
        values = [state, *sliders]

        # Slider values reach the library as sent (preprocess=False): its check is the one
        # that refuses a hand-made value, into the status line (Gradio's own check would log
        # a traceback for each).
        def redraw(session, *values):
            try:
                return explorer.image(session, values), ""
            except ex.ExplorerError as e:
                return gr.skip(), _refused(e)

        def changed(step):  # step(session, *first_inputs) -> the session with a new face
            def run(*inputs):
                session, rest = inputs[-len(values)], inputs[-len(values) + 1 :]
                try:
                    session = step(session, *inputs[: -len(values)])
                    image = explorer.image(session, rest)
                except ex.ExplorerError as e:
                    return session, gr.skip(), gr.skip(), gr.skip(), _refused(e)
                return session, image, explorer.original(session), _caption(session), ""

            return run

        def take_upload(data, session):  # bytes in memory: Gradio's File(type="binary")
            try:  # the file box is emptied either way: the photo is in the session now
                return explorer.upload(session, data), "", None
            except ex.ExplorerError as e:
                return session, _refused(e), None

        def show(session, *values):  # after an upload: the face it made, or the old one
            try:
                image = explorer.image(session, values)
            except ex.ExplorerError as e:
                return gr.skip(), gr.skip(), gr.skip(), _refused(e)
            return image, explorer.original(session), _caption(session), gr.skip()

        after = [state, face, original, caption, status]
        common = dict(concurrency_id=QUEUE, show_progress="hidden")
        raw = dict(preprocess=False, **common)
        for i, slider in enumerate(sliders):
            slider.input(redraw, values, [face, status], trigger_mode="always_last",
                         api_name="redraw" if i == 0 else False, **raw)  # fmt: skip
        new_face.click(changed(explorer.random_face), [prior, *values], after,
                       api_name="random_face", **raw)  # fmt: skip
        test_face.click(changed(explorer.next_test_face), values, after, api_name="test_face",
                        **raw)  # fmt: skip
        random_target.click(changed(explorer.random_target), [prior, *values], after,
                            api_name="random_target", **raw)  # fmt: skip
        test_target.click(changed(explorer.test_target), values, after, api_name="test_target",
                          **raw)  # fmt: skip
        upload.upload(take_upload, [upload, state], [state, status, upload], api_name="upload",
                      **common).then(show, values, [face, original, caption, status],
                                     api_name=False, **raw)  # fmt: skip

        def reset_all(session):
            defaults = explorer.defaults()
            return *defaults, explorer.image(session, defaults), ""

        reset.click(reset_all, [state], [*sliders, face, status], api_name="reset", **common)
    return blocks


def _sliders(explorer: ex.Explorer) -> list[gr.Slider]:
    made = []
    groups = [("", ("temperature", "walk")), ("latent dimensions, most KL first", ("dim:",)),
              ("attribute vectors", ("attr:",))]  # fmt: skip
    for title, prefixes in groups:
        chosen = [s for s in explorer.sliders if s.key.startswith(prefixes)]
        if not chosen:
            continue
        with gr.Accordion(title, open=True) if title else gr.Group():
            for s in chosen:
                made.append((explorer.sliders.index(s), gr.Slider(
                    s.minimum, s.maximum, value=s.value, step=s.step, label=s.label,
                    elem_id="slider-" + s.key.replace(":", "-"),
                )))  # fmt: skip
    return [slider for _, slider in sorted(made, key=lambda pair: pair[0])]


def _caption(session: ex.Session) -> str:
    return f"Showing **{session.face.label}**; the walk goes to **{session.target.label}**."


def launch(explorer: ex.Explorer, host: str, port: int) -> Server:
    """Serves the page in Gradio's own thread; returns once it answers. ExplorerError when
    `host`:`port` cannot be bound."""
    blocks = build(explorer)
    blocks.queue(max_size=MAX_QUEUED, default_concurrency_limit=1)
    try:
        blocks.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
            max_file_size=ex.UPLOAD_LIMITS.max_file_bytes, show_error=True, ssr_mode=False,
            theme=THEME, css=CSS, inbrowser=False, share=False,
        )  # fmt: skip
    except OSError as e:
        blocks.close()
        raise ex.ExplorerError(
            f"cannot serve on {short(host, 40)}:{port} ({short(e, 100)}): choose another "
            "`port`, or a `host` of this machine"
        ) from None
    return Server(blocks.local_url or f"http://{host}:{port}/", blocks)
