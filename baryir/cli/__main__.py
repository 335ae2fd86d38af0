"""``python -m baryir.cli``: the same as the ``baryir`` command (``torchrun -m baryir.cli train ...``)."""

import sys

from . import main

sys.exit(main())
