"""Stand-in for ComfyUI's ``comfy_api`` package (see tests/comfyui_stub/README.md)."""
