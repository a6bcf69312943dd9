"""``python -m emotion_cli``: the `emotion` command (as ``torchrun -m emotion_cli train`` starts it)."""

from emotion_cli.main import entry

if __name__ == "__main__":
    entry()
