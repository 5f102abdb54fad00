"""``python -m unifl.webui_extension``: the standalone UniFL tab (what ``unifl webui`` runs)."""

import sys

from .standalone import main

sys.exit(main())
