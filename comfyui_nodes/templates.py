"""The pack's workflow templates in the order to run them (UniFL 1 … UniFL 8) in ComfyUI's Templates browser.

ComfyUI's ``GET /workflow_templates`` lists a pack's example workflows in the order the file system returns them
(0.3.64 ``app/custom_node_manager.py``: ``glob.glob``, i.e. directory order; ext4 orders by a hash of the name,
which showed 1, 2, 5, 4, 3, 7, 6, 8 on one install; newer servers gather them in a ``set``), and the frontend
(1.27.10, 1.58.1) shows the cards in that order: it sorts a custom pack's templates by nothing and reads no index
file for them. No file name or index can fix the order, so the pack sorts its own entry of that one response: a
middleware appended to ComfyUI's server when the pack is imported (before the server starts), which leaves every
other route and every other pack's list as it is.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger("unifl")

#: The routes of the listing (the frontend calls the ``/api`` one).
TEMPLATE_ROUTES = ("/workflow_templates", "/api/workflow_templates")
_PACK_DIR = Path(__file__).parents[1]
#: ComfyUI keys the listing by the pack's folder name in ``custom_nodes`` (a symlinked folder: the link's name).
PACK_NAMES = frozenset({_PACK_DIR.name, _PACK_DIR.resolve().name})


def run_order(name: str) -> tuple:
    """Natural order of template names: ``UniFL 2 - …`` before ``UniFL 10 - …``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def ordered(listing: dict[str, list[str]], packs=PACK_NAMES) -> dict[str, list[str]]:
    """The ``/workflow_templates`` listing with this pack's templates in run order; other packs' lists untouched."""
    return {pack: sorted(names, key=run_order) if pack in packs and isinstance(names, list) else names for pack, names in listing.items()}


def keep_template_order() -> bool:
    """Install the middleware on the running ComfyUI's server; ``False`` (and nothing changed) outside ComfyUI or
    once the server has started (its middlewares are frozen then)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    app = getattr(instance, "app", None)
    if app is None or app.frozen:
        log.warning("UniFL: ComfyUI's server is already running; the Templates browser may show UniFL's workflows out of order")
        return False

    @web.middleware
    async def unifl_template_order(request, handler):
        response = await handler(request)
        if request.method == "GET" and request.path in TEMPLATE_ROUTES and getattr(response, "content_type", "") == "application/json" and response.body:
            return web.json_response(ordered(json.loads(response.body)), status=response.status)
        return response

    app.middlewares.append(unifl_template_order)
    return True
