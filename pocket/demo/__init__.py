"""``unifl demo`` (:mod:`.demo`) and a UniFL LoRA beside the pocket ControlNet and motion adapter
(:mod:`.downstream`)."""
