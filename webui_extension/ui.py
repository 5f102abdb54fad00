"""The "UniFL" tab: one gradio Blocks for the webui (gradio 3.41 and 4.x) and the standalone app (5/6).

``build_tab(host)`` builds it against a :class:`~.host.Host`; nothing here imports the webui. Every
input is addressed by an ``unifl_*`` elem_id (the webui persists values by label, the tests find them
by id). Handlers are thin: form values go through :mod:`.form` into a core config, the run through
:mod:`.jobs`, and what the page shows comes from :mod:`.views`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import gradio as gr

from ..core.config import ConfigError, TrainConfig, load_config
from ..core.diffusion.loading import ModelLoadError
from ..core.files import FileNameTooLong, check_output_file
from ..core.memory import release_freed_memory
from ..core.training.checkpoint import list_checkpoints
from ..core.training.preflight import PreflightError, check_before_training
from ..core.training.terms import feedback_terms
from . import client_js, form, jobs, views
from .compat import js_hook
from .host import RUNS_FOLDER, Host

CONTINUE, START_OVER = "continue it", "start over"
#: Errors of the form, of config validation and of the input check, shown in the status instead of starting.
#: OSError: what the file system refuses (an unreadable folder, a file where a folder should be) is a refusal too, never a traceback.
START_ERRORS = (form.FormError, PreflightError, jobs.JobBusy, *jobs.EXPECTED_ERRORS, FileNameTooLong, OSError)


def _slug(field: form.Field) -> str:
    return "unifl_" + field.key.replace(".", "_")


def _component(field: form.Field, value, help_text: str):
    common = {"label": field.label, "info": help_text, "elem_id": _slug(field)}
    if field.widget == "int":
        return gr.Number(value=value, precision=0, **common)
    if field.widget == "float":
        return gr.Number(value=value, **common)
    if field.widget == "bool":
        return gr.Checkbox(value=value, **common)
    if field.widget == "radio":
        return gr.Radio(list(field.choices), value=value, **common)
    if field.widget == "choice":
        return gr.Dropdown(list(field.choices), value=value, **common)
    return gr.Textbox(value=value, lines=3 if field.widget == "lines" else 1, **common)


def _initial_config(host: Host, checkpoint: str | None):
    """The form's first values: the default checkpoint's preset, or SD1.5's if that file is unreadable."""
    try:
        if checkpoint is not None:
            return form.preset_config(form.AUTO_PRESET, host.checkpoints()[checkpoint])
    except (ModelLoadError, ConfigError):
        pass
    return load_config(None, [], preset="sd15")


def build_tab(host: Host) -> gr.Blocks:
    """The tab, ready for ``on_ui_tabs`` (the webui renders it) or for :func:`.standalone.build_app`."""
    helps = form.help_texts()
    readable = ", ".join(map(str, host.ui_confinement().readable))
    for key in form.READ_FIELDS:  # the tab's path confinement, said where the path is typed rather than only in its refusal
        helps[key] += f" This tab reads files only inside {readable}."
    checkpoints = host.checkpoints()
    default_checkpoint = host.default_checkpoint()
    config = _initial_config(host, default_checkpoint)
    values = form.form_values(config)
    reward_values, perception_values = form.shown_feedback(config, host.unifl_dir())
    reward_choices = [form.OFF, *form.model_catalog("rewards", host.unifl_dir())]
    perception_choices = [form.OFF, *form.model_catalog("perception", host.unifl_dir())]
    fields: dict[str, object] = {}

    def add(field: form.Field):
        fields[field.key] = _component(field, values[field.key], helps.get(field.key, ""))
        return fields[field.key]

    with gr.Blocks(analytics_enabled=False) as tab:
        task_id = gr.Textbox(visible=False)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    checkpoint = gr.Dropdown(list(checkpoints), value=default_checkpoint, label="Checkpoint", elem_id="unifl_checkpoint",
                                             info="The base model to improve: its file is loaded by UniFL itself (offline, local configs).")
                    preset = gr.Dropdown(form.preset_names(), value=form.AUTO_PRESET, label="Preset", elem_id="unifl_preset",
                                         info="Starting values for the fields below; 'auto' follows the checkpoint's family.")
                    refresh_lists = gr.Button("🔄 Refresh lists", elem_id="unifl_refresh_lists")
                with gr.Row():
                    add(form.STAGE)
                    init_from = gr.Dropdown(list(form.lora_choices(host.lora_dir())), value=form.NO_LORA, label="Start from LoRA",
                                            elem_id="unifl_init_from", info=helps["lora.init_from"])
                with gr.Row():
                    add(form.OUTPUT_NAME)
                    existing = gr.Radio([CONTINUE, START_OVER], value=CONTINUE, label="If a run of this name exists", elem_id="unifl_existing",
                                        info="continue it: resume from its last checkpoint (raise Steps to train longer); start over: delete its checkpoints.")
                    replace = gr.Checkbox(False, label="Replace an existing LoRA file of this name", elem_id="unifl_replace")
                with gr.Accordion("Data", open=True):
                    for field in form.DATA_FIELDS:
                        add(field)
                with gr.Accordion("Feedback models", open=True):
                    gr.Markdown(f"Reward models score generated images per aspect; perception models give stage 1's PeFL losses. "
                                f"Model files (from `unifl train-reward`) are listed from `{host.unifl_dir()}/rewards` and `/perception`.")
                    rewards = []
                    for pair in (form.REWARD_ASPECTS[:2], form.REWARD_ASPECTS[2:]):
                        with gr.Row():
                            rewards += [gr.Dropdown(reward_choices, value=reward_values[a], label=f"{a} reward", elem_id=f"unifl_reward_{a}") for a in pair]
                    with gr.Row():
                        perception = [gr.Dropdown(perception_choices, value=perception_values[a], label=f"{a} perception", elem_id=f"unifl_perception_{a}")
                                      for a in form.PERCEPTION_ASPECTS]
                    with gr.Row():
                        for field in form.WEIGHT_FIELDS:
                            add(field)
                    no_feedback = gr.Checkbox(False, label="Train without feedback (denoising only)", elem_id="unifl_no_feedback",
                                              info="Train refuses a run whose dropdowns and weights leave no PeFL, aesthetic or adversarial term, "
                                                   "unless this is ticked: such a LoRA only learns to denoise the training images.")
                with gr.Accordion("Training", open=True):
                    with gr.Row():
                        for field in form.TRAINING_FIELDS:
                            add(field)
                with gr.Accordion("Advanced", open=False, elem_id="unifl_advanced"):
                    with gr.Row():
                        for field in form.ADVANCED_FIELDS[:4]:
                            add(field)
                    with gr.Row():
                        for field in form.ADVANCED_FIELDS[4:]:
                            add(field)
                    extra = gr.Textbox(lines=3, label="Extra settings", elem_id="unifl_extra",
                                       info="key=value per line, as for `unifl train --set` (see `unifl train --explain`); applied last, "
                                            "so e.g. rewards=[...] here replaces the dropdowns.")
            with gr.Column(scale=2):
                with gr.Row():
                    train = gr.Button("Train", variant="primary", elem_id="unifl_train")
                    stop = gr.Button("Stop", elem_id="unifl_stop")
                    poll = gr.Button("↻ Status", elem_id="unifl_poll")
                gr.HTML("", elem_id="unifl_progress")  # the webui's progress bar appears above this
                # Built once, served to every page load: the status starts neutral and ↻ Status fills it.
                status = gr.HTML(views.status_html(None), elem_id="unifl_status")
                gallery = gr.Gallery(label="Previews", columns=4, elem_id="unifl_gallery")
                loss = gr.Image(label="Loss curve", type="pil", interactive=False, elem_id="unifl_loss")
                result = gr.Textbox(label="Result", lines=3, interactive=False, elem_id="unifl_result")

        # The webui saves input values to ui-config.json and restores them at start-up; lists that
        # change with the files on disk, and outputs, must not be restored (A1111 modules/ui_loadsave.py).
        for component in (task_id, checkpoint, init_from, *rewards, *perception, no_feedback, result):
            component.do_not_save_to_config = True

        refillable = [f for f in form.FIELDS if f not in (form.STAGE, form.OUTPUT_NAME)]

        def refill(checkpoint_label, preset_name, stage_value):
            """A new checkpoint or preset: show that preset's values for the stage (stage and name stay the user's)."""
            try:
                config = form.preset_config(preset_name, _model_path(host, checkpoint_label), stage_value)
            except START_ERRORS as error:
                return [gr.update() for _ in range(len(refillable) + len(rewards) + len(perception))] + [views.error_html(str(error))]
            values = form.form_values(config)
            reward_values, perception_values = form.shown_feedback(config, host.unifl_dir())
            return ([values[f.key] for f in refillable] + [reward_values[a] for a in form.REWARD_ASPECTS]
                    + [perception_values[a] for a in form.PERCEPTION_ASPECTS] + [views.status_html(_snapshot())])

        refill_outputs = [fields[f.key] for f in refillable] + rewards + perception + [status]
        checkpoint.change(refill, inputs=[checkpoint, preset, fields[form.STAGE.key]], outputs=refill_outputs)
        preset.change(refill, inputs=[checkpoint, preset, fields[form.STAGE.key]], outputs=refill_outputs)

        def restage(checkpoint_label, preset_name, stage_value):
            """A new stage: only the values the preset sets per stage (the user's other edits stay)."""
            try:
                model_path = _model_path(host, checkpoint_label)
                values, staged = form.form_values(form.preset_config(preset_name, model_path, stage_value)), form.stage_refilled(preset_name, model_path)
            except START_ERRORS:
                return [gr.update() for _ in refillable]
            return [values[f.key] if f.key in staged else gr.update() for f in refillable]

        fields[form.STAGE.key].change(restage, inputs=[checkpoint, preset, fields[form.STAGE.key]], outputs=[fields[f.key] for f in refillable])

        def refresh():
            reward_catalog = [form.OFF, *form.model_catalog("rewards", host.unifl_dir())]
            perception_catalog = [form.OFF, *form.model_catalog("perception", host.unifl_dir())]
            return ([gr.update(choices=list(host.checkpoints(refresh=True))), gr.update(choices=list(form.lora_choices(host.lora_dir())))]
                    + [gr.update(choices=reward_catalog) for _ in rewards] + [gr.update(choices=perception_catalog) for _ in perception])

        refresh_lists.click(refresh, outputs=[checkpoint, init_from, *rewards, *perception])

        field_list = list(fields.values())

        def start(task, checkpoint_label, preset_name, init_label, existing_mode, replace_file, without_feedback, extra_text, *rest):
            field_values = dict(zip(fields, rest[: len(fields)]))
            reward_labels = dict(zip(form.REWARD_ASPECTS, rest[len(fields): len(fields) + len(rewards)]))
            perception_labels = dict(zip(form.PERCEPTION_ASPECTS, rest[len(fields) + len(rewards):]))
            return train_clicked(host, task or f"task(unifl-{uuid.uuid4().hex[:10]})", checkpoint_label, preset_name, init_label,
                                 existing_mode == CONTINUE, bool(replace_file), extra_text, field_values, reward_labels, perception_labels,
                                 bool(without_feedback))

        train.click(start, inputs=[task_id, checkpoint, preset, init_from, existing, replace, no_feedback, extra, *field_list, *rewards, *perception],
                    outputs=[status, result], **js_hook(client_js.START)).then(None, inputs=[status], outputs=None, **js_hook(client_js.FOLLOW))

        def request_stop():
            job = jobs.current_job()
            if job is not None:
                job.request_stop()
            return views.status_html(_snapshot())

        stop.click(request_stop, outputs=[status]).then(None, inputs=[status], outputs=None, **js_hook(client_js.FOLLOW))

        def show():
            snapshot = _snapshot()
            return views.status_html(snapshot), views.gallery_items(snapshot), views.loss_plot(snapshot), views.result_text(snapshot)

        poll.click(show, outputs=[status, gallery, loss, result], show_progress=False).then(None, inputs=[status], outputs=None, **js_hook(client_js.FOLLOW))
    return tab


def _snapshot() -> jobs.Snapshot | None:
    job = jobs.current_job()
    return job.snapshot() if job is not None else None


def _model_path(host: Host, checkpoint_label: str | None) -> str:
    """The file of the chosen checkpoint; a file added since the list was read is found by re-reading it."""
    path = host.checkpoints().get(checkpoint_label or "") or host.checkpoints(refresh=True).get(checkpoint_label or "")
    if path is None:
        raise form.FormError(f"checkpoint {checkpoint_label!r} is not in the checkpoint folder (any more): press 🔄 Refresh lists, then pick one from the Checkpoint list")
    return path


def train_clicked(host: Host, task_id: str, *args) -> tuple[str, str]:
    """Train: start the run (arguments as :func:`start_job`'s); the status and result texts to show.

    A refused start leaves nothing behind in the host: its progress bar, started in the browser by the
    click, is ended, and no queue slot or job state was taken.
    """
    try:
        job = start_job(host, task_id, *args)
    except START_ERRORS as error:
        host.end_refused_task(task_id)
        if not isinstance(error, jobs.JobBusy):  # (a busy refusal read nothing, and a run is using the heap now)
            release_freed_memory()  # the check read files (a start-from LoRA's tensors, images): give that back too
        return views.error_html(str(error)), ""
    return views.status_html(job.snapshot()), views.result_text(job.snapshot())


def start_job(host: Host, task_id: str, *args, **kwargs) -> jobs.TrainingJob:
    """Check the form (arguments as :func:`checked_run`'s) and hand the run to the host; raises a START_ERRORS
    on bad input, and :class:`~.jobs.JobBusy` at once while another run is active."""
    jobs.refuse_if_busy()  # before the checks, which wait while a loading job builds its model (one build at a time)
    config, destination, resume, replace = checked_run(host, *args, **kwargs)
    job = jobs.TrainingJob(task_id, config, host, destination, resume=resume, replace=replace)
    jobs.submit(job, host)
    return job


def checked_run(host: Host, checkpoint_label: str, preset_name: str, init_label: str, resume_wanted: bool, replace: bool, extra: str,
                values: dict, reward_labels: dict, perception_labels: dict, without_feedback: bool = False) -> tuple[TrainConfig, Path, bool, bool]:
    """The run the form asks for, checked before anything loads: its config, where its LoRA goes, whether it
    resumes, whether it may replace that LoRA. Raises a START_ERRORS naming what to fix.

    A run with no feedback term (no PeFL, aesthetic or adversarial loss) is refused unless
    ``without_feedback`` says the user wants exactly that.
    """
    name = form.check_output_name(values[form.OUTPUT_NAME.key])
    values = {**values, form.OUTPUT_NAME.key: name}
    destination = host.lora_dir() / f"{name}.safetensors"
    check_output_file(destination, "LoRA name:")  # a name the file system cannot hold, before anything is looked up by it
    if destination.exists() and not replace:
        raise form.FormError(f"{destination} already exists: choose another LoRA name, or tick 'Replace an existing LoRA file of this name'")
    init_from = form.lora_choices(host.lora_dir()).get(init_label)
    if init_from is None:
        raise form.FormError(f"start-from LoRA {init_label!r} is no longer in {host.lora_dir()}: press 🔄 Refresh lists")
    run_dir = host.unifl_dir() / RUNS_FOLDER / name
    config = form.build_config(preset=preset_name, model_path=_model_path(host, checkpoint_label), run_dir=run_dir, values=values, init_from=init_from,
                               rewards=reward_labels, perception=perception_labels, unifl_dir=host.unifl_dir(), extra=extra)
    form.confine_to_host(config, host)
    if not feedback_terms(config) and not without_feedback:
        raise form.FormError("these settings train no feedback term (every reward and perception dropdown is off, or its weight is 0), "
                             "so the LoRA would only learn to denoise the training images: pick reward or perception models, "
                             "or tick 'Train without feedback (denoising only)'")
    check_before_training(config, names=form.FIELD_LABELS)  # in this request, before the model loads in the worker (10-15 s)
    resume = resume_wanted and bool(list_checkpoints(config.logging.output_dir))  # the folder the run will use, wherever it was set
    return config, destination, resume, replace
