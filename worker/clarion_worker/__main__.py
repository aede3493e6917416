"""``python -m clarion_worker`` is ``clarion-worker``."""

import sys

from clarion_worker.server import main

sys.exit(main())
