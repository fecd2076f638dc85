"""The Train LoRA tab (gradio 3.41 in A1111, 4.40 in Forge; the differences live in gradio_compat.py).
Wiring only: fields come from form.FIELDS, texts from panels.py,
actions from handlers.py. No webui import here; the host passed in is the only way to the webui."""

from __future__ import annotations

import gradio as gr

from lora_trainer.ui import form
from lora_trainer.ui.gradio_compat import gallery as _gallery
from lora_trainer.ui.gradio_compat import js_event
from lora_trainer.ui.gradio_compat import line_plot as _line_plot
from lora_trainer.ui.handlers import Handlers

# periodic refreshes must not flash gradio's "processing" overlay over the panel (gradio 4 spells it "hidden")
QUIET = False if gr.__version__.startswith("3.") else "hidden"
PROGRESS_HTML = "<div class='train-lora-progress-box'><div id='train_lora_progress_anchor'></div></div>"
SECTION_TITLES = {"dataset": "1 · Dataset", "network": "2 · Network", "training": "3 · Training",
                  "previews": "4 · Previews", "output": "Output and saving"}


def _component(field: form.Field, value, placeholder: str = ""):
    common = dict(label=field.label, elem_id=f"train_lora_{field.key}")
    if field.info:
        common["info"] = field.info
    if field.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if field.kind == "int":
        return gr.Number(value=value, precision=0, **common)
    if field.kind == "float":
        return gr.Number(value=value, **common)
    if field.kind == "choice":
        return gr.Dropdown(choices=list(field.choices), value=value, **common)
    if field.kind == "radio":
        return gr.Radio(choices=list(field.choices), value=value, **common)
    lines = 3 if field.kind == "textarea" else 1
    return gr.Textbox(value=value, lines=lines, max_lines=12 if lines > 1 else 1, placeholder=placeholder or None,
                      **common)


def _fields_in(section: str, advanced: bool):
    return [f for f in form.FIELDS if f.section == section and f.advanced == advanced]


def _render_fields(fields, values, components, placeholders=None, per_row: int = 3):
    placeholders = placeholders or {}
    for start in range(0, len(fields), per_row):
        with gr.Row():
            for field in fields[start:start + per_row]:
                components[field.key] = _component(field, values[field.key], placeholders.get(field.key, ""))


def _no_save(*components):
    """Output-only components must not be remembered in ui-config.json."""
    for c in components:
        c.do_not_save_to_config = True


def _folder_picker(components, key: str, handlers: Handlers):
    with gr.Row(elem_classes=["train-lora-folder-row"]):
        components[key] = _component(form.FIELDS_BY_KEY[key], "")
        browse = gr.Button("📂", elem_classes=["tool", "train-lora-tool"], elem_id=f"train_lora_{key}_browse")
    picker = gr.Dropdown(label="Sub-folders (pick one)", choices=[], visible=False,
                         elem_id=f"train_lora_{key}_picker")
    _no_save(picker)
    browse.click(handlers.browse_folder, inputs=[components[key]], outputs=[picker])
    picker.select(handlers.pick_folder, inputs=[picker], outputs=[components[key], picker])


def _section(section: str, values, components, handlers: Handlers, open_: bool = True, placeholders=None):
    with gr.Accordion(SECTION_TITLES[section], open=open_, elem_id=f"train_lora_section_{section}"):
        if section == "training":
            _recipe_picker(components)
        basic = _fields_in(section, advanced=False)
        if section == "dataset":
            _folder_picker(components, "train_dir", handlers)
            _folder_picker(components, "reg_dir", handlers)
            basic = [f for f in basic if f.key not in ("train_dir", "reg_dir")]
        _render_fields(basic, values, components, placeholders)
        advanced = _fields_in(section, advanced=True)
        if advanced:
            with gr.Accordion("Advanced", open=False):
                _render_fields(advanced, values, components, placeholders)


def _recipe_picker(components):
    from lora_trainer.recipes import recipe_names

    with gr.Row():
        components["_recipe"] = gr.Dropdown(label="Recipe", choices=recipe_names(), value=None,
                                            elem_id="train_lora_recipe",
                                            info="Fills the form with a known-good starting point and says why.")
    components["_recipe_note"] = gr.Markdown(elem_id="train_lora_recipe_note")
    _no_save(components["_recipe"], components["_recipe_note"])


def build_tab(runner) -> gr.Blocks:
    host = runner.host
    handlers = Handlers(runner)
    values = form.default_values(output_dir="", caption_extension=host.setting("train_lora_caption_extension", ".txt"))
    components = {}
    with gr.Blocks(analytics_enabled=False) as blocks:
        with gr.Row(equal_height=False, elem_id="train_lora_main"):
            with gr.Column(scale=3, elem_id="train_lora_settings"):
                _section("dataset", values, components, handlers)
                with gr.Row():
                    check_button = gr.Button("Check dataset", elem_id="train_lora_check_dataset")
                dataset_summary = gr.Markdown(elem_id="train_lora_dataset_summary")
                dataset_table = gr.Dataframe(headers=handlers.folder_headers, interactive=False, visible=False,
                                             elem_id="train_lora_dataset_table")
                with gr.Accordion("Caption images with the webui's BLIP / DeepBooru", open=False,
                                  elem_id="train_lora_captioning"):
                    with gr.Row():
                        use_blip = gr.Checkbox(label="BLIP (sentence)", value=True, elem_id="train_lora_cap_blip")
                        use_booru = gr.Checkbox(label="DeepBooru (tags)", value=False,
                                                elem_id="train_lora_cap_booru")
                        caption_mode = gr.Radio(label="Images that already have a caption",
                                                choices=["skip", "overwrite", "append"], value="skip",
                                                elem_id="train_lora_cap_mode")
                    caption_button = gr.Button("Caption images", elem_id="train_lora_caption_button")
                    caption_result = gr.Markdown(elem_id="train_lora_caption_result")
                for section in ("network", "training", "previews"):
                    _section(section, values, components, handlers)
                _section("output", values, components, handlers, open_=False,
                         placeholders={"output_dir": host.default_output_dir()})
                with gr.Accordion("Settings as JSON (for the HTTP API and the command line)", open=False):
                    with gr.Row():
                        show_json = gr.Button("Show these settings as JSON")
                        load_json = gr.Button("Load JSON into the form")
                        load_kohya = gr.Button("Load kohya config", elem_id="train_lora_load_kohya")
                    config_json = gr.Code(language="json", interactive=True, elem_id="train_lora_config_json")
                    json_message = gr.Markdown()

            with gr.Column(scale=2, elem_id="train_lora_run"):
                with gr.Row():
                    # callables: computed at every page load, not once when the webui built the tab
                    model_info = gr.Markdown(handlers.model_info, elem_id="train_lora_model_info")
                    model_refresh = gr.Button("🔄", elem_classes=["tool", "train-lora-tool"],
                                              elem_id="train_lora_model_refresh")
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id="train_lora_start")
                    cancel = gr.Button("Cancel", elem_id="train_lora_cancel")
                plan_line = gr.Markdown(elem_id="train_lora_plan")  # memory plan (ui/plan_view.py)
                # requestProgress() puts the webui's bar into the anchor's parent: our own positioned box, so the
                # absolutely placed .progressDiv sits here and not over the "Model:" line (style.css)
                gr.HTML(PROGRESS_HTML, elem_id="train_lora_progress")
                notice = gr.Markdown("", elem_id="train_lora_notice")  # answers to Start / Cancel clicks
                status = gr.Markdown(handlers.status_text, elem_id="train_lora_status")
                notice_key = gr.Textbox(visible=False, elem_id="train_lora_notice_key")
                with gr.Row():
                    send_text = gr.Textbox(label="Prompt snippet", interactive=False, elem_id="train_lora_send_text")
                    send = gr.Button("Send to txt2img", elem_id="train_lora_send_to_txt2img")
                loss_plot = _line_plot(x="step", y="loss", color="curve", title="Loss", height=220, width=500,
                                        elem_id="train_lora_loss_plot", tooltip=["step", "loss", "curve"])
                gallery = _gallery(label="Previews (newest first)", columns=2, height=360, object_fit="contain",
                                     elem_id="train_lora_previews")
                log = gr.Textbox(label="Log", lines=10, max_lines=10, interactive=False, elem_id="train_lora_log")
                with gr.Row():
                    refresh = gr.Button("Refresh status", elem_id="train_lora_refresh")
                task_id = gr.Textbox(visible=False, elem_id="train_lora_task_id")
        _no_save(dataset_summary, caption_result, config_json, json_message, model_info, status, send_text, log,
                 task_id, dataset_table, notice, notice_key)

        field_inputs = [components[f.key] for f in form.FIELDS]
        check_button.click(handlers.check_dataset, inputs=field_inputs,
                           outputs=[dataset_summary, dataset_table])
        caption_button.click(handlers.caption, inputs=[components["train_dir"], components["trigger_word"],
                                                       components["caption_extension"], use_blip, use_booru,
                                                       caption_mode, components["reg_dir"]],
                             outputs=[caption_result])
        model_refresh.click(handlers.model_info, outputs=[model_info])
        start_outputs = [notice, notice_key, status, task_id, model_info]
        js_event(start.click(handlers.start, inputs=field_inputs, outputs=start_outputs).then,
                 "train_lora_attach_progress", inputs=[task_id])
        cancel.click(handlers.cancel, outputs=[notice, notice_key, status])
        panel_outputs = [status, loss_plot, gallery, log, send_text, task_id, notice, notice_key]
        # also clicked by train_lora.js: at page load (re-attach to a running job) and while the tab is open
        js_event(refresh.click(handlers.refresh, inputs=[notice_key], outputs=panel_outputs, show_progress=QUIET).then,
                 "train_lora_attach_progress", inputs=[task_id])
        js_event(send.click, "train_lora_send_to_txt2img", inputs=[send_text])
        show_json.click(handlers.settings_json, inputs=field_inputs, outputs=[config_json, json_message])
        components["_recipe"].change(handlers.apply_recipe, inputs=[components["_recipe"], *field_inputs],
                                     outputs=[components["_recipe_note"], *field_inputs])
        load_json.click(handlers.load_json, inputs=[config_json], outputs=[json_message, *field_inputs])
        load_kohya.click(handlers.load_kohya, inputs=[config_json], outputs=[json_message, *field_inputs])
        _wire_plan(runner, components, field_inputs, plan_line, model_refresh)
    return blocks


def _wire_plan(runner, components, field_inputs, plan_line, model_refresh) -> None:
    from lora_trainer.ui.plan_view import PLAN_FIELDS, plan_markdown

    def replan(*args):
        return plan_markdown(runner, {f.key: v for f, v in zip(form.FIELDS, args)})

    for key in PLAN_FIELDS:
        if key in components:
            components[key].change(replan, inputs=field_inputs, outputs=[plan_line])
    model_refresh.click(replan, inputs=field_inputs, outputs=[plan_line])
