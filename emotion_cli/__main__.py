"""``python -m emotion_cli``: the `emotion` command (as ``torchrun -m emotion_cli train`` starts it)."""

import sys

from emotion_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
