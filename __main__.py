"""``python -m unifl`` (and ``accelerate launch -m unifl train CONFIG``)."""

import sys

from .cli import main

sys.exit(main())
