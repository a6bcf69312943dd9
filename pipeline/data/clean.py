"""The cleaning policy: text normalization and row filtering on a copy of the snapshot, logged per split.

Rules, in order (each row is counted by the first rule that removes it):

0. repair every text, one rule at a time, each counted (``repair_*``): HTML entities unescaped (``&quot;`` -> ``"``),
   mojibake fixed with ftfy (``donâ€™t`` -> ``don’t``; ``ï¿½``, a character lost before publication, becomes
   U+FFFD, which the tokenizer drops), literal two-character ``\\n`` / ``\\r`` sequences and carriage returns
   turned into line breaks (which step 1 collapses);
1. normalize every text: Unicode normal form (``unicode_form``), whitespace collapsed, optional lower-casing;
   then URLs masked to ``url_token`` and user mentions (``@name``) to ``mention_token`` (each optional);
2. drop rows whose text is missing or empty after normalization;
3. conflicting labels, the same text with different labels (label sets, order-insensitive, for multi-label)
   within a split: ``drop`` all its rows, keep the ``majority`` label's rows (a tie drops them all), or ``keep``;
4. duplicates within a split (same text and labels): keep the first (``drop_duplicates``);
5. leakage: drop validation/test rows whose text is also in the cleaned train split (``drop_leakage``).

Texts are compared after step 1, so what cleaning treats as equal is what the model will see.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import console
from pipeline.config import CleanConfig
from pipeline.data.ingest import SPLITS

log = logging.getLogger(__name__)

# default-ignorable code points outside the format category (Cf): combining grapheme joiner, Hangul fillers,
# Khmer inherent vowels, Mongolian and other variation selectors; they render as nothing
_IGNORABLE = frozenset(
    chr(c) for c in (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0)
) | frozenset(chr(c) for c in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])
# control, format (zero-width space and joiners, BOM, bidi marks), surrogate, and space or line separators
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def has_visible_text(text: str) -> bool:
    """Whether ``text`` shows anything: one that holds only NUL, control, zero-width or format characters is as
    empty as a blank one (the API and `emotion score` refuse both alike)."""
    return any(c not in _IGNORABLE and unicodedata.category(c) not in _INVISIBLE_CATEGORIES for c in text)


REPAIR_COLUMNS = ("repaired_html", "repaired_mojibake", "repaired_literal_newlines", "repaired_crlf")
CHANGE_COLUMNS = (
    "rows_in",
    *REPAIR_COLUMNS,
    "normalized",
    "urls_masked",
    "mentions_masked",
    "dropped_empty",
    "dropped_conflicts",
    "dropped_duplicates",
    "dropped_leakage",
    "rows_out",
)
URL = re.compile(r"(?:\bhttps?://|\bwww\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]}]", re.IGNORECASE)
MENTION = re.compile(r"(?<![\w@])@\w+")
HELD_OUT = ("validation", "test")
HTML_ENTITY = re.compile(r"&#?\w{1,10};")
LITERAL_BREAK = re.compile(r"\\r\\n|\\[nr]")  # the two characters backslash-n (or -r), as some exports write them
REPAIR_KEYS = ("repair_html", "repair_mojibake", "repair_line_breaks")


@dataclass
class CleanResult:
    frame: pd.DataFrame
    changes: pd.DataFrame  # one row per split, the columns of CHANGE_COLUMNS


def unescape_html(text: str) -> str:
    """``&quot;``, ``&amp;``, ``&#39;`` as the characters they stand for (ftfy: only entities ending in ';').

    Twice-escaped text (``&amp;lt;3``) is unescaped fully, so repairing a repaired text changes nothing: the
    evaluation and drift paths pass cleaned texts through the model folder's policy once more.
    """
    import ftfy.fixes

    for _ in range(3):
        if "&" not in text or not HTML_ENTITY.search(text):
            break
        text = ftfy.fixes.unescape_html(text)
    return text


def fix_mojibake(text: str) -> str:
    """UTF-8 decoded as Latin-1/cp1252 (``â€™``, ``ï¿½``) fixed with ftfy, nothing else of ftfy's changes."""
    if text.isascii():  # mojibake is always non-ASCII: skip ftfy for most texts
        return text
    import ftfy

    only_encoding = ftfy.TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        remove_control_chars=False,
        normalization=None,
        explain=False,
    )
    return str(ftfy.fix_text(text, only_encoding))


def fix_literal_newlines(text: str) -> str:
    """The two characters ``\\n`` (or ``\\r``, ``\\r\\n``) a tweet export left in place of a line break."""
    return LITERAL_BREAK.sub("\n", text) if "\\" in text else text


def fix_crlf(text: str) -> str:
    """Carriage returns (CRLF line ends of the source, lone CRs) as plain line breaks."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


RepairRule = Callable[[str], str]


def repair_rules(cfg: CleanConfig) -> list[tuple[str, RepairRule]]:
    """The repair rules the policy turns on, in order, each with its column in the change table."""
    rules: list[tuple[str, RepairRule]] = []
    if cfg.repair_html:
        rules.append(("repaired_html", unescape_html))
    if cfg.repair_mojibake:
        rules.append(("repaired_mojibake", fix_mojibake))
    if cfg.repair_line_breaks:
        rules += [("repaired_literal_newlines", fix_literal_newlines), ("repaired_crlf", fix_crlf)]
    return rules


def repair_text(text: str, cfg: CleanConfig) -> str:
    """Every repair rule of the policy applied to one text (before normalization)."""
    for _, rule in repair_rules(cfg):
        text = rule(text)
    return text


def normalize_text(text: str, cfg: CleanConfig) -> str:
    """Unicode normal form, collapsed whitespace, optional lower-casing."""
    if cfg.unicode_form != "none":
        text = unicodedata.normalize(cfg.unicode_form, text)
    text = " ".join(text.split())
    return text.lower() if cfg.lowercase else text


def mask_urls(text: str, cfg: CleanConfig) -> str:
    return URL.sub(cfg.url_token, text) if cfg.mask_urls else text


def mask_mentions(text: str, cfg: CleanConfig) -> str:
    if not cfg.mask_mentions:
        return text
    return MENTION.sub(lambda m: m.group(0) if m.group(0) == cfg.mention_token else cfg.mention_token, text)


def prepare_text(text: str, cfg: CleanConfig) -> str:
    """Everything cleaning does to one text: applied at training time and, from the model folder, at serving."""
    return mask_mentions(mask_urls(normalize_text(repair_text(text, cfg), cfg), cfg), cfg)


PREPROCESSING_FILE = "preprocessing.json"


def save_text_policy(model_dir: Path, cfg: CleanConfig) -> None:
    """Store the text policy with the model, so prediction sees texts as training did."""
    (Path(model_dir) / PREPROCESSING_FILE).write_text(cfg.model_dump_json(indent=2))


def load_text_policy(model_dir: Path) -> CleanConfig | None:
    """The stored policy; one saved before text repair existed keeps repair off, as its model was trained."""
    path = Path(model_dir) / PREPROCESSING_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return CleanConfig.model_validate({key: False for key in REPAIR_KEYS} | saved)


def policy(cfg: CleanConfig) -> str:
    """The cleaning policy in one line, for the log."""
    repairs = [
        name for key, name in zip(REPAIR_KEYS, ("html entities", "mojibake", "line breaks")) if getattr(cfg, key)
    ]
    return (
        f"unicode {cfg.unicode_form}, whitespace collapsed, lowercase {'on' if cfg.lowercase else 'off'}, "
        f"urls {'masked as ' + cfg.url_token if cfg.mask_urls else 'kept'}, "
        f"mentions {'masked as ' + cfg.mention_token if cfg.mask_mentions else 'kept'}, empty rows dropped, "
        f"conflicting labels {cfg.conflicts}, duplicates {'dropped' if cfg.drop_duplicates else 'kept'}, "
        f"leakage {'dropped from validation/test' if cfg.drop_leakage else 'kept'}, "
        f"text repair: {', '.join(repairs) or 'off'}"
    )


def _label_key(label: object) -> object:
    """A hashable label: the string, or the sorted set of a multi-label list."""
    if isinstance(label, (list, tuple, np.ndarray)):
        return tuple(sorted({str(v) for v in list(label)}))
    return label


def _conflicts(frame: pd.DataFrame, alive: pd.Series, rule: str) -> pd.Series:
    """Rows dropped because their text carries different labels within the split."""
    dropped = pd.Series(False, index=frame.index)
    if rule == "keep":
        return dropped
    rows = pd.DataFrame({"split": frame["split"], "text": frame["text"], "label": frame["label"].map(_label_key)})[
        alive
    ]
    distinct = rows.groupby(["split", "text"], sort=False, dropna=False)["label"].transform("nunique")
    conflicting = rows[distinct > 1]
    if rule == "drop":
        dropped[conflicting.index] = True
        return dropped
    for _, group in conflicting.groupby(["split", "text"], sort=False, dropna=False)["label"]:
        counts = group.value_counts()
        if counts.iloc[0] == counts.iloc[1]:  # no majority: drop them all
            dropped[group.index] = True
        else:
            top = counts.index[0]
            dropped[group.index[[v != top for v in group]]] = True  # label keys may be tuples: compare one by one
    return dropped


def clean(frame: pd.DataFrame, cfg: CleanConfig) -> CleanResult:
    """Apply the cleaning policy to a copy of ``frame``; returns the kept rows and a per-split table of changes."""
    out = frame.copy().reset_index(drop=True)
    present = out["text"].map(lambda t: isinstance(t, str))
    raw = out["text"].where(present, "")
    repaired: dict[str, pd.Series] = {name: pd.Series(False, index=out.index) for name in REPAIR_COLUMNS}
    for name, rule in repair_rules(cfg):
        fixed = raw.map(rule)
        repaired[name] = fixed != raw
        raw = fixed
    text = raw.map(lambda t: normalize_text(t, cfg))
    normalized = (text != raw) & present
    masked_urls = text.map(lambda t: mask_urls(t, cfg))
    urls = masked_urls != text
    masked = masked_urls.map(lambda t: mask_mentions(t, cfg))
    mentions = masked != masked_urls
    out["text"] = masked

    empty = out["text"].str.len() == 0
    conflict = _conflicts(out, ~empty, cfg.conflicts)
    alive = ~empty & ~conflict
    keyed = pd.DataFrame({"split": out["split"], "text": out["text"], "label": out["label"].map(_label_key)})
    duplicate = pd.Series(False, index=out.index)
    if cfg.drop_duplicates:
        duplicate = keyed[alive].duplicated(keep="first").reindex(out.index, fill_value=False).astype(bool)
    alive &= ~duplicate
    if cfg.drop_leakage:
        train_texts = set(out.loc[alive & (out["split"] == "train"), "text"])
        leaked = alive & out["split"].isin(HELD_OUT) & out["text"].isin(train_texts)
    else:
        leaked = pd.Series(False, index=out.index)
    alive &= ~leaked

    by = out["split"]
    flags = repaired | {
        "normalized": normalized,
        "urls_masked": urls,
        "mentions_masked": mentions,
        "dropped_empty": empty,
        "dropped_conflicts": conflict,
        "dropped_duplicates": duplicate,
        "dropped_leakage": leaked,
    }
    stats = pd.DataFrame({"rows_in": by.value_counts()} | {k: v.groupby(by).sum() for k, v in flags.items()})
    stats["rows_out"] = by[alive].value_counts()
    order = [s for s in SPLITS if s in stats.index] + sorted(str(s) for s in stats.index if s not in SPLITS)
    stats = stats.reindex(order).fillna(0).astype(int)[list(CHANGE_COLUMNS)]
    stats.index.name = "split"
    cleaned = out[alive].reset_index(drop=True)
    log.info("cleaning policy: %s", policy(cfg))
    log.info("cleaning, per split:\n%s", stats.to_string())
    _announce_repairs(stats)
    return CleanResult(cleaned, stats)


def _announce_repairs(stats: pd.DataFrame) -> None:
    """One console line with the rows each repair rule changed, when any did."""
    totals = {name.removeprefix("repaired_"): int(stats[name].sum()) for name in REPAIR_COLUMNS}
    if any(totals.values()):
        console.stage("text repair", ", ".join(f"{rule.replace('_', ' ')} {n}" for rule, n in totals.items()) + " rows")
