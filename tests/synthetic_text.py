"""Vocabulary for the synthetic labelled texts the data tests write (seven labels, each with a telling word)."""

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
