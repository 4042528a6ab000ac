"""``python -m sparkle_motion.services <tool_id | module> [--host H] [--port P]``."""

import sys

from sparkle_motion.services.serve import main

sys.exit(main())
