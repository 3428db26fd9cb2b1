"""``python -m DiffuX2CTLib`` runs the ``diffux2ct`` command line."""

import sys

from .cli import main

sys.exit(main())
