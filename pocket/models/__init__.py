"""The pocket's networks and their builds: the LDM (:mod:`.ldm`, in resumable parts, :mod:`.resumable`), its
add-ons (:mod:`.addons`, :mod:`.controlnet`, :mod:`.motion`), the PeFL perception models (:mod:`.perception`),
the held-out evaluators (:mod:`.evaluators`), the aspect rewards (:mod:`.rewards`) and the perception build
(:mod:`.build_perception`). Below the judges; above the world."""
