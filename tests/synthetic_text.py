"""Synthetic labelled texts: seven labels with a telling word each (data tests), and cue-word texts for six emotions
(the learned fixture model)."""

import random

SEVEN = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
WORDS = {
    "anger": "furious",
    "disgust": "revolting",
    "fear": "terrified",
    "joy": "delighted",
    "neutral": "ordinary",
    "sadness": "heartbroken",
    "surprise": "astonished",
}
THINGS = [
    "meeting",
    "bus ride",
    "dinner",
    "phone call",
    "weather",
    "exam",
    "trip",
    "movie",
    "game",
    "letter",
    "garden",
    "shop",
    "concert",
    "visit",
    "email",
    "party",
    "lesson",
    "walk",
    "market",
    "news",
]

# Cue-word texts for the session's learned fixture model (tests/conftest.py): each of the six emotions has its own
# cue words, every one a single word piece of the embedded tokenizer, set among neutral filler words, so a tiny
# encoder learns them in seconds and its answers (labels, attributions, order) can be checked exactly.
EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
CUES = {
    "sadness": ["sad", "lonely"],
    "joy": ["happy", "cheerful"],
    "love": ["love", "darling"],
    "anger": ["angry", "furious"],
    "fear": ["afraid", "scared"],
    "surprise": ["surprised", "astonished"],
}
NEUTRAL = (
    "the a today we went to see my friend at old house after lunch and then with our new car near big park "
    "on some quiet street by river in morning they were there this was it"
)
FILLER = NEUTRAL.split()


def cue_text(label: str, rng: random.Random) -> str:
    """Four to nine filler words with one cue word of ``label`` at a random place."""
    words = rng.choices(FILLER, k=rng.randint(4, 9))
    words.insert(rng.randint(0, len(words)), rng.choice(CUES[label]))
    return " ".join(words)


def cue_rows(n: int, seed: int, noise: float = 0.0) -> list[tuple[str, str]]:
    """``n`` (text, label) pairs, the labels in turn so every emotion has as many; a ``noise`` share of them then
    get a random label (noisy validation keeps temperature scaling from making every answer certain)."""
    rng = random.Random(seed)
    rows = [(cue_text(label, rng), label) for label in (EMOTIONS[i % len(EMOTIONS)] for i in range(n))]
    return [(text, rng.choice(EMOTIONS) if rng.random() < noise else label) for text, label in rows]


# One cue text per emotion, of very different lengths (length-sorted batches reorder them): answers in the wrong
# order change the label sequence, so any permutation is seen.
ORDERED = [
    ("sad", "sadness"),
    (
        "we went to the park by the river in the morning and then with my friend to see the old house after lunch "
        "and it was happy",
        "joy",
    ),
    ("my darling", "love"),
    ("they were angry at the new car near the big park", "anger"),
    ("in the morning we were scared", "fear"),
    ("this was it and then we were astonished by some quiet street near our house", "surprise"),
]
