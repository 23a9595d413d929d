"""``python -m scratchgpt.cli``: the ``scratchgpt`` command."""

import sys

from scratchgpt.cli import main

sys.exit(main())
