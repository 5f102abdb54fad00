"""The AUTOMATIC1111/Forge adapter of UniFL: the "UniFL" training tab, and ``unifl webui`` standalone.

Thin translation only; training, losses, LoRA and export live in :mod:`unifl.core`.

* :mod:`.register` hooks the tab and settings into the webui (called by ``scripts/unifl_webui.py``);
* :mod:`.ui` builds the tab against a :class:`~.host.Host` (:mod:`.host`: the webui or standalone);
* :mod:`.form` turns form values into a core config, :mod:`.jobs` runs it, :mod:`.views` shows it;
* :mod:`.standalone` serves the tab as a plain gradio app (``unifl webui``);
* :mod:`.requirements_check` is what ``install.py`` and the tab use to find missing packages.

Importing this package imports nothing: the webui loads it while it starts.
"""
