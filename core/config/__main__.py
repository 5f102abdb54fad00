"""``python -m unifl.core.config > docs/config-reference.md``: the config reference, generated."""

from .loading import render_reference

print(render_reference(), end="")
