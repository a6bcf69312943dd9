"""Behavioural tests in the spirit of CheckList (Ribeiro et al., 2020), written for this project.

Minimum functionality: clear sentences per emotion must get their label. Invariance: changing a person's
name, a place, a number or trailing punctuation must not change the prediction (beyond a tolerance).
Sentences here are original and deliberately unlike the sample data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MFT_CASES: dict[str, list[str]] = {
    "sadness": [
        "i cried all night after my grandfather passed away",
        "everything feels empty and hopeless since she moved out",
        "i feel so lonely and miserable this winter",
        "my heart sank when i read the rejection letter and i could not stop crying",
        "i am heartbroken and grieving the loss of my old dog",
    ],
    "joy": [
        "i am so happy and cheerful today, everything is going great",
        "what a delightful afternoon, i feel wonderful and content",
        "i passed the exam and i am thrilled and glad",
        "i feel joyful and relaxed after a lovely weekend",
        "this is the best day, i am smiling and laughing with delight",
    ],
    "love": [
        "i adore my partner and feel so tender toward her",
        "i love you with all my heart, my darling",
        "holding my newborn daughter filled me with deep affection",
        "i feel so romantic and devoted when he holds my hand",
        "my sweetheart makes me feel cherished and adored",
    ],
    "anger": [
        "i am furious that they lied to me again",
        "this rude driver made me so angry i could scream",
        "i am outraged and fed up with their constant insults",
        "i feel irritated and resentful about being ignored at work",
        "stop shouting at me, i am absolutely livid",
    ],
    "fear": [
        "i am terrified of walking home alone in the dark",
        "my heart pounds with dread before the surgery",
        "i feel scared and anxious that something bad will happen",
        "the strange noise downstairs made me panic and tremble",
        "i am frightened and nervous about the storm tonight",
    ],
    "surprise": [
        "wow, i am completely amazed, i never expected that",
        "i was stunned and astonished by the sudden news",
        "i could not believe my eyes, what a shock",
        "i am so surprised that they remembered my name",
        "that twist caught me totally off guard, i am astounded",
    ],
}

# Templates for invariance: the placeholders are swapped while the emotion stays the same.
INVARIANCE_TEMPLATES = [
    "i had coffee with {name} in {place} and we talked for {number} hours",
    "{name} called me from {place} to say the train was {number} minutes late",
    "i am so happy that {name} is visiting {place} for {number} days",
    "i miss {name} terribly since the move to {place} {number} years ago",
    "{name} yelled at me in front of {number} people in {place} and i am furious",
    "i am scared because {name} has not answered in {number} hours since landing in {place}",
    "i was amazed when {name} showed up in {place} with {number} balloons",
    "i love spending quiet evenings with {name} in {place}",
]
NAMES = ["Maria", "Kwame", "Yuki", "Oliver", "Priya", "Mateo"]
PLACES = ["Lisbon", "Nairobi", "Osaka", "Toronto", "Lima", "Oslo"]
NUMBERS = ["2", "5", "11", "30", "48", "100"]
ENDINGS = ["", ".", "!", "...", " :)"]
TRAILING = re.compile(r"[\s.!?:;,)(]+$")


@dataclass
class BehaviourReport:
    mft_accuracy: float | None  # None when the label set has no labels with project cases
    invariance_rate: float
    mean_probability_shift: float
    cases: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def invariance_pairs(test_texts: list[str], max_texts: int = 100) -> list[tuple[str, str, str]]:
    """(kind, original, perturbed) pairs: names, places and numbers in templates; punctuation on test texts."""
    pairs: list[tuple[str, str, str]] = []
    for template in INVARIANCE_TEMPLATES:
        base = {"name": NAMES[0], "place": PLACES[0], "number": NUMBERS[0]}
        original = template.format(**base)
        for key, values in (("name", NAMES), ("place", PLACES), ("number", NUMBERS)):
            if "{" + key + "}" in template:
                pairs += [(key, original, template.format(**(base | {key: v}))) for v in values[1:]]
    stride = max(1, len(test_texts) // max_texts)
    for text in test_texts[::stride][:max_texts]:
        stem = TRAILING.sub("", text)
        pairs += [("punctuation", text, stem + end) for end in ENDINGS if stem + end != text]
    return pairs


def run_suite(
    predict_proba: Callable[[list[str]], np.ndarray], labels: list[str], test_texts: list[str], tolerance: float
) -> BehaviourReport:
    """Score a model's behaviour; ``predict_proba`` maps texts to calibrated probabilities (rows sum to 1)."""
    mft = [(text, label) for label in labels for text in MFT_CASES.get(label, [])]
    pairs = invariance_pairs(test_texts)
    texts = [t for t, _ in mft] + [p[1] for p in pairs] + [p[2] for p in pairs]
    probs = predict_proba(texts) if texts else np.zeros((0, len(labels)))
    failures: list[dict[str, Any]] = []

    mft_probs = probs[: len(mft)]
    hits = [labels[int(row.argmax())] == label for row, (_, label) in zip(mft_probs, mft)]
    failures += [
        {"test": "minimum functionality", "text": text, "expected": label, "predicted": labels[int(row.argmax())]}
        for (text, label), row, hit in zip(mft, mft_probs, hits)
        if not hit
    ][:10]

    originals = probs[len(mft) : len(mft) + len(pairs)]
    perturbed = probs[len(mft) + len(pairs) :]
    held, shifts = [], []
    for (kind, a, b), pa, pb in zip(pairs, originals, perturbed):
        top = int(pa.argmax())
        shift = float(abs(pa[top] - pb[top]))
        ok = top == int(pb.argmax()) and shift <= tolerance
        held.append(ok)
        shifts.append(shift)
        if not ok and len(failures) < 20:
            failures.append(
                {
                    "test": f"invariance ({kind})",
                    "text": a,
                    "perturbed": b,
                    "predicted": labels[top],
                    "perturbed_predicted": labels[int(pb.argmax())],
                    "shift": round(shift, 3),
                }
            )
    return BehaviourReport(
        mft_accuracy=float(np.mean(hits)) if hits else None,
        invariance_rate=float(np.mean(held)) if held else 1.0,
        mean_probability_shift=float(np.mean(shifts)) if shifts else 0.0,
        cases=len(mft) + len(pairs),
        failures=failures,
    )
