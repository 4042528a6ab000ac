"""``python -m function_tools.videos_wan [--host H] [--port P]`` == ``sparkle-motion serve videos_wan``."""

import sys

from sparkle_motion.services.serve import main

# main() calls sparkle_motion.services.serve("videos_wan") and turns start-up errors into a clean exit code.
sys.exit(main(["videos_wan", *sys.argv[1:]]))
