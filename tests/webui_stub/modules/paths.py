"""Stand-in for A1111 ``modules/paths.py``: the models folder (tests point it at a temporary folder)."""

models_path = "models"
