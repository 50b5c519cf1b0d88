"""``python -m funnel_server`` runs the ``funnel-server`` command."""

import sys

from funnel_server._cli import main

sys.exit(main())
