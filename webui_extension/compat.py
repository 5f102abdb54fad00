"""The few places where gradio 3.41 (A1111, reForge), 4.x (Forge) and 5/6 (standalone) differ for this tab.

Everything else in the tab uses the subset that behaves the same on all of them (see
``shared/notes/a1111-webui.md`` §2.3): no ``.style()``, no ``gr.X.update``, no ``gr.Box``, no
``every=``/``gr.Timer``. What is left is the name of the client-side hook of an event listener.
"""

from __future__ import annotations

import gradio as gr

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def js_hook(source: str) -> dict:
    """The keyword that runs ``source`` (a JS function expression) in the browser before the event:
    ``_js`` on gradio 3, ``js`` from gradio 4 on (Forge accepts both only through its own shim)."""
    return {"_js": source} if GRADIO_MAJOR < 4 else {"js": source}


def queue_app(blocks: gr.Blocks) -> gr.Blocks:
    """Enable the queue with room for the tab's poll requests beside a running event.

    gradio 3 runs one queued event at a time unless ``concurrency_count`` is raised; gradio 4+ limits
    concurrency per event listener instead (and no longer accepts ``concurrency_count``).
    """
    return blocks.queue(concurrency_count=4) if GRADIO_MAJOR < 4 else blocks.queue()
