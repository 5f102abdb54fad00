"""Test stand-in for the AUTOMATIC1111 webui's ``modules`` package (see ``tests/webui_stub/README.md``)."""
