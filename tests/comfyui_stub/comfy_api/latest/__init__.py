"""Stand-in for ``comfy_api.latest`` (ComfyUI 0.3.64): ``ComfyExtension``, ``io``, ``ui``."""

from abc import ABC, abstractmethod

from . import io, ui  # noqa: F401


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list:
        """The node classes of the extension."""
