"""Hooks the UniFL tab and its settings into the webui (A1111, Forge, reForge, SD.Next).

Imported by ``scripts/unifl_webui.py`` while the webui loads scripts, so it imports nothing heavy at
module level: a missing or too-old dependency must not turn into the webui's "Error loading script"
and a silently missing tab (the most common complaint about extensions). Instead, whatever stops
the tab from building is shown *in* the tab, with the fix.
"""

from __future__ import annotations

import traceback

TAB_TITLE, TAB_ID = "UniFL", "unifl"


def register() -> None:
    from modules import script_callbacks

    script_callbacks.on_ui_tabs(ui_tabs)
    script_callbacks.on_ui_settings(add_settings)


def ui_tabs() -> list[tuple]:
    """``on_ui_tabs`` callback: the tab, or an error tab saying why it cannot be built."""
    try:
        problems = requirement_problems()
        if problems:
            return [(error_tab("UniFL needs other package versions than this webui has:", "\n\n".join(problems)), TAB_TITLE, TAB_ID)]
        from .host import WebuiHost
        from .ui import build_tab

        return [(build_tab(WebuiHost()), TAB_TITLE, TAB_ID)]
    except Exception as error:  # shown in the tab; the traceback goes to the console for bug reports
        traceback.print_exc()
        return [(error_tab("The UniFL tab could not be built (the traceback is in the webui's console):", f"{type(error).__name__}: {error}"), TAB_TITLE, TAB_ID)]


def requirement_problems() -> list[str]:
    """What ``install.py`` found or would install, phrased for a user whose webui ran without it."""
    from .requirements_check import check

    findings = check()
    missing = [f"{requirement} is not installed: restart the webui without --skip-install (its install step adds it), "
               f'or run pip install "{requirement}" in the webui\'s Python.' for requirement in findings.to_install]
    return missing + list(findings.problems)


def error_tab(headline: str, details: str):
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown(f"### {headline}")
        gr.Textbox(value=details, lines=max(3, details.count("\n") + 2), interactive=False, show_label=False, elem_id="unifl_error")
    return tab


def add_settings() -> None:
    """``on_ui_settings`` callback: the UniFL section of Settings."""
    from modules import shared

    from .host import MODULE_KINDS_OPTION, SETTINGS_SECTION, UNIFL_DIR_OPTION, UNLOAD_OPTION

    shared.opts.add_option(UNIFL_DIR_OPTION, shared.OptionInfo(
        "", "UniFL folder: reward/perception model files (rewards/, perception/) and training runs (runs/); empty = models/unifl", section=SETTINGS_SECTION))
    shared.opts.add_option(UNLOAD_OPTION, shared.OptionInfo(
        True, "Move the webui's model off the GPU while UniFL trains (it is brought back afterwards)", section=SETTINGS_SECTION))
    shared.opts.add_option(MODULE_KINDS_OPTION, shared.OptionInfo(
        False, "Allow kind = \"module\" in the tab's Extra settings: it imports and runs the Python code a setting names "
        "(turn on only where everyone who can reach this webui may run code on this machine)", section=SETTINGS_SECTION))
