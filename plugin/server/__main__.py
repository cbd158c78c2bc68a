"""``python -m facecomp.server [ARGS]`` = ``facecomp serve [ARGS]`` (how a client starts the server)."""

import sys

from ..cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
