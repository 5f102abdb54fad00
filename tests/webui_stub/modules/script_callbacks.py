"""Stand-in for A1111 ``modules/script_callbacks.py``: the two callbacks the extension registers."""

import traceback

callbacks_ui_tabs = []
callbacks_ui_settings = []


def on_ui_tabs(callback):
    """The callback returns ``None`` or a list of ``(gradio_component, title, elem_id)``."""
    callbacks_ui_tabs.append(callback)


def on_ui_settings(callback):
    callbacks_ui_settings.append(callback)


def ui_tabs_callback():
    """What ``modules/ui.py::create_ui`` calls; like the webui, a failing callback only prints."""
    tabs = []
    for callback in callbacks_ui_tabs:
        try:
            tabs += callback() or []
        except Exception:
            traceback.print_exc()
    return tabs


def ui_settings_callback():
    for callback in callbacks_ui_settings:
        try:
            callback()
        except Exception:
            traceback.print_exc()
