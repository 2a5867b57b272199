"""``python -m retrieval.cli`` runs the clipdex command."""

import sys

from retrieval.cli import main

sys.exit(main())
