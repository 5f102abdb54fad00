"""Stand-in for A1111 ``modules/devices.py``: the device the webui computes on (tests set ``cpu``)."""

import torch

device = torch.device("cuda")
