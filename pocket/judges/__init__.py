"""The arena's judges and the measuring: the prompt judge (:mod:`.judges`, built by :mod:`.build_judges`), the
spectrum distance (:mod:`.spectrum`), the post-filter controls (:mod:`.post_filters`) and the demo's held-out
measurements (:mod:`.evaluate`). They read models and the world; no model imports them."""
