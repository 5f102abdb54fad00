"""Training prompts: UniFL's active prompt selection (the command is ``unifl select-prompts``).

- :mod:`.relations`: the information score of a prompt (a small rule-based scene-graph parser).
- :mod:`.embed`: prompt embedders (hashed TF-IDF, sentence-transformers folders, CLIP text encoders).
- :mod:`.select`: the filter, the nearest-neighbour compression, ANS, and :func:`~.select.select_prompts`.

Importing this package is cheap (no torch).
"""

from __future__ import annotations

