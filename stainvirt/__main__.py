"""``python -m stainvirt`` runs the command line."""

import sys

from stainvirt.cli import main

sys.exit(main())
