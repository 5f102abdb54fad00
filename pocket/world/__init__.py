"""The pocket world itself: scenes, captions, renders and masks (:mod:`.world`), the world as a training image
source (:mod:`.data`) and its per-aspect degradations (:mod:`.degrade`). Imports nothing else of the pocket."""
