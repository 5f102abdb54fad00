"""The arena: UniFL, its ablations and the peers a user would pick instead, judged side by side.

Every model is sampled on the same prompts and seeds through one plain diffusers pipeline (the pocket
model, each row with its own scheduler and LoRA), over three training seeds with disjoint sampling
seeds, and measured by judges grounded in the world's truth (:mod:`unifl.pocket.judges.judges`), frozen before
any model was scored. :mod:`.plan` says which seeds and splits are which and what each row is,
:mod:`.run` runs it job by job (resumable), :mod:`.claims` checks every claim against the spreads,
:mod:`.report` writes ``report.md`` and ``metrics.json``, :mod:`.docs` the docs tables from them.
"""
