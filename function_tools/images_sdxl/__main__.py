"""``python -m function_tools.images_sdxl [--host H] [--port P]`` == ``sparkle-motion serve images_sdxl``."""

import sys

from sparkle_motion.services.serve import main

# main() calls sparkle_motion.services.serve("images_sdxl") and turns start-up errors into a clean exit code.
sys.exit(main(["images_sdxl", *sys.argv[1:]]))
