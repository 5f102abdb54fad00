"""Stand-in for ComfyUI's ``comfy`` package (see tests/comfyui_stub/README.md)."""
