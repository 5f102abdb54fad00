"""``python -m unifl`` (and ``accelerate launch -m unifl train CONFIG``)."""

import sys

from .core.cli import main

sys.exit(main())
