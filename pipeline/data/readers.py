"""Readers for labelled text as it really comes: any delimiter and encoding, malformed rows by policy,
gzip/zip, spreadsheets, JSON arrays, globs and lists of files, and folders of ``.txt`` files per label.

Every reader returns a frame of the file's own columns (cells as strings, an empty cell missing) and records
what it found (encoding, delimiter, header, malformed lines) in a :class:`FileReport`, so nothing is decided
silently: the ingest report, the validation report and MLflow all show it.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import io
import json
import logging
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import pandas as pd

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
FALLBACK_ENCODING = "cp1252"  # Windows' Western European code page; latin-1 covers its five undefined bytes
BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
NEWLINES = {
    bom: "\n".encode(codec)
    for bom, codec in (  # UTF-32 first, as in BOMS
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    )
}
BINARY_MAGIC = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"PAR1": "a Parquet file (set data.format=parquet or name it .parquet)",
    b"\xd0\xcf\x11\xe0": "an old binary .xls workbook (save it as .xlsx or CSV)",
    b"SQLite format 3": "an SQLite database",
}
COMPRESSED = (".gz", ".zip")
SNIFF_CHARS = 65536
MAX_EXAMPLES = 5
MAX_LINES_KEPT = 1000  # line numbers of malformed rows kept in the report


@dataclass
class BadRow:
    """One malformed record: where it starts (1-based physical line), its field count and its raw text."""

    line: int
    fields: int
    expected: int
    raw: str


@dataclass
class FileReport:
    """What reading one file found."""

    file: str
    format: str
    rows: int = 0
    encoding: str | None = None
    delimiter: str | None = None
    header: bool | None = None
    columns: list[str] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blank_records: int = 0  # records of only blank cells (``,``, ``"   "``) left out; blank lines are not records
    blank_lines: list[int] = field(default_factory=list)  # where the first of them start

    def count_blank(self, line: int) -> None:
        """One record of only blank cells, left out as a blank line is, but counted so the reports show it."""
        self.blank_records += 1
        if len(self.blank_lines) < MAX_LINES_KEPT:
            self.blank_lines.append(line)

    def blank_note(self) -> str | None:
        """The blank records as a report line, or None."""
        if not self.blank_records:
            return None
        lines = ", ".join(map(str, self.blank_lines[:10])) + (", ..." if self.blank_records > 10 else "")
        return f"{self.blank_records} record(s) of only blank cells left out at line(s) {lines}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bad_row_count"] = len(self.bad_rows)
        out["bad_lines"] = [b.line for b in self.bad_rows[:MAX_LINES_KEPT]]
        out["bad_rows"] = [asdict(b) for b in self.bad_rows[:MAX_EXAMPLES]]
        out["delimiter"] = DELIMITER_NAMES.get(self.delimiter or "", self.delimiter)
        return out


@dataclass(frozen=True)
class ReadOptions:
    """How to read delimited text and decode bytes (the data.* reader settings)."""

    delimiter: str = "auto"
    quotechar: str | None = '"'
    escapechar: str | None = None
    header: bool = True
    comment: str | None = None
    encoding: str = "utf-8"
    bad_rows: str = "error"
    sheet: str | None = None


# --- bytes: compression, binary files, encodings ---------------------------------------------------------------


def data_name(path: Path) -> str:
    """The file name without a compression suffix: ``train.csv.gz`` -> ``train.csv``."""
    name = path.name
    for suffix in COMPRESSED:
        if name.lower().endswith(suffix) and name.lower() != suffix:
            return name[: -len(suffix)]
    return name


def read_bytes(path: Path) -> tuple[bytes, str]:
    """The file's (decompressed) bytes and the name its format is told by; a zip must hold one data file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw), data_name(path)
        except (OSError, EOFError) as exc:
            raise PipelineError(f"{path} is a damaged gzip file: {exc}") from exc
    if raw[:4] == b"PK\x03\x04":
        return _unzip(path, raw)
    return raw, data_name(path)


def _unzip(path: Path, raw: bytes) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = archive.namelist()
            if "xl/workbook.xml" in names:  # a spreadsheet is a zip too
                return raw, path.name if path.suffix.lower() == ".xlsx" else path.stem + ".xlsx"
            member = _zip_member(path, archive)
            return archive.read(member), Path(member).name
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise PipelineError(f"{path} starts like a zip archive but is a damaged one: {exc}") from exc


def _zip_member(path: Path, archive: zipfile.ZipFile) -> str:
    members = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
    if len(members) != 1:
        raise PipelineError(
            f"{path} holds {len(members)} files ({', '.join(members[:5])}); a zip source must hold exactly one: "
            "extract it and point data.source at the folder or a glob"
        )
    return members[0]


@dataclass(frozen=True)
class Head:
    """The first bytes of a file (decompressed, whole lines only) and whether more of it follows."""

    raw: bytes
    name: str  # the name its format is told by
    truncated: bool


@contextmanager
def _data_stream(path: Path) -> Iterator[tuple[IO[bytes], str]]:
    """The file's decompressed bytes as a stream, without reading them all: gzip, a zip of one file, or plain."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
            fh.seek(0)
            if magic[:2] == b"\x1f\x8b":
                with gzip.open(fh) as inner:
                    yield cast("IO[bytes]", inner), data_name(path)  # GzipFile reads as IO[bytes] does
            elif magic == b"PK\x03\x04":
                with zipfile.ZipFile(fh) as archive:
                    member = _zip_member(path, archive)
                    with archive.open(member) as inner:
                        yield inner, Path(member).name
            else:
                yield fh, data_name(path)
    except (gzip.BadGzipFile, EOFError, zipfile.BadZipFile) as exc:
        raise PipelineError(f"{path} is a damaged archive: {exc}") from exc
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from exc


def is_plain(path: Path) -> bool:
    """Whether the file is neither gzip nor zip (a workbook is a zip), so its bytes are its data."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return magic[:2] != b"\x1f\x8b" and magic != b"PK\x03\x04"


def read_head(path: Path, limit: int) -> Head:
    """At most ``limit`` bytes of the (decompressed) file, cut after its last whole line; a workbook whole."""
    if _is_workbook(path):
        raw, name = read_bytes(path)
        return Head(raw, name, False)
    with _data_stream(path) as (fh, name):
        raw = fh.read(limit + 1)
    if len(raw) <= limit:
        return Head(raw, name, False)
    return Head(_whole_lines(raw[:limit]), name, True)


def count_lines(path: Path) -> tuple[int, int]:
    """(lines, bytes) of the (decompressed) file, read block by block in constant memory."""
    lines = size = 0
    with _data_stream(path) as (fh, _):
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
            size += len(block)
    return lines, size


def _whole_lines(raw: bytes) -> bytes:
    """``raw`` up to its last newline, in the unit of its BOM's encoding; a line longer than ``raw`` is cut
    where no character is split."""
    bom, newline = next(((b, n) for b, n in NEWLINES.items() if raw.startswith(b)), (b"", b"\n"))
    end = len(raw)
    while (found := raw.rfind(newline, len(bom), end)) >= 0:
        if (found - len(bom)) % len(newline) == 0:
            return raw[: found + len(newline)]
        end = found + len(newline) - 1
    if bom:
        return raw[: len(raw) - (len(raw) - len(bom)) % len(newline)]
    for back in range(1, min(4, len(raw)) + 1):  # drop a UTF-8 sequence the cut split (its lead byte and on)
        if raw[-back] < 0x80:
            break
        if raw[-back] >= 0xC0:
            return raw[:-back]
    return raw


def _is_workbook(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "xl/workbook.xml" in archive.namelist()


def refuse_binary(raw: bytes, path: Path) -> None:
    """A clear error for bytes that are not text at all (images, PDFs, databases, ...)."""
    for magic, kind in BINARY_MAGIC.items():
        if raw.startswith(magic):
            raise PipelineError(f"{path} is not a text file: it is {kind}")
    if not any(raw.startswith(bom) for bom, _ in BOMS) and b"\x00" in raw[:8192]:
        raise PipelineError(
            f"{path} is not a text file (it holds NUL bytes): point data.source at CSV/TSV/JSON/text/xlsx/parquet"
        )


def decode(raw: bytes, encoding: str, path: Path) -> tuple[str, str]:
    """The text and the encoding used: a BOM always wins; ``auto`` tries strict UTF-8 then cp1252."""
    refuse_binary(raw, path)
    if encoding.lower().replace("_", "-") in ("auto", "utf-8", "utf8", "utf-8-sig"):
        for bom, name in BOMS:
            if raw.startswith(bom):
                try:
                    return raw.decode(name), name
                except UnicodeDecodeError as exc:
                    raise PipelineError(
                        f"{path} starts with a {name} byte-order mark but is not {name} text ({exc.reason} at byte "
                        f"{exc.start}): re-encode it as UTF-8"
                    ) from exc
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            if encoding != "auto":
                raise PipelineError(
                    f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode it as UTF-8, or set "
                    f"data.encoding=auto (UTF-8, then {FALLBACK_ENCODING}) or the file's encoding"
                ) from exc
        try:
            return raw.decode(FALLBACK_ENCODING), FALLBACK_ENCODING
        except UnicodeDecodeError:
            return raw.decode("latin-1"), "latin-1"
    try:
        return raw.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{path} is not {encoding} text ({exc.reason} at byte {exc.start}); set data.encoding to the file's "
            "encoding, or auto"
        ) from exc


def stream_encoding(path: Path, encoding: str) -> str:
    """The codec to stream ``path`` with, chosen as ``decode`` chooses: a BOM wins; ``auto`` is UTF-8 if the whole
    file decodes as UTF-8 (checked block by block), else cp1252."""
    with path.open("rb") as fh:
        head = fh.read(8192)
        refuse_binary(head, path)
        if encoding.lower().replace("_", "-") not in ("auto", "utf-8", "utf8", "utf-8-sig"):
            return encoding
        for bom, name in BOMS:
            if head.startswith(bom):
                return name
        if encoding != "auto":
            return "utf-8"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for block in iter(lambda: fh.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            log.info("%s is not UTF-8: read as %s (data.encoding=auto)", path, FALLBACK_ENCODING)
            return FALLBACK_ENCODING
    return "utf-8"


# --- delimited text --------------------------------------------------------------------------------------------


class _Lines:
    """Physical lines for csv.reader, numbered, with comment lines between records left out."""

    def __init__(self, lines: Iterable[str], comment: str | None) -> None:
        self._lines = iter(lines)
        self.comment = comment
        self.number = 0
        self.start: int | None = None  # first line of the record being read
        self.kept: list[str] = []  # the lines of the record being read

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while True:
            line = next(self._lines)
            self.number += 1
            if self.start is None and self.comment and line.startswith(self.comment):
                continue
            if self.start is None:
                self.start, self.kept = self.number, []
            self.kept.append(line)
            return line


class _Window:
    """The lines of one record, indexed as the whole file's list of lines would be (line ``first`` at
    ``first - 1``), so a record is checked without the file's other lines in memory."""

    def __init__(self, lines: list[str], first: int) -> None:
        self.lines, self.offset = lines, first - 1

    def __getitem__(self, index: slice) -> list[str]:
        return self.lines[index.start - self.offset : index.stop - self.offset]

    def line(self, number: int) -> str:
        return self.lines[number - 1 - self.offset]


def _records(text: str, delimiter: str, opts: ReadOptions) -> list[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of every non-blank record."""
    return list(iter_records(io.StringIO(text, newline=""), delimiter, opts))


def iter_records(
    lines: Iterable[str], delimiter: str, opts: ReadOptions, report: FileReport | None = None
) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of every non-blank record of ``lines`` (read with ``newline=""``), streamed;
    ``report`` counts the records of only blank cells left out."""
    for start, end, fields, _ in _iter_kept(lines, delimiter, opts, report):
        yield start, end, fields


def _iter_kept(
    lines: Iterable[str], delimiter: str, opts: ReadOptions, report: FileReport | None = None
) -> Iterator[tuple[int, int, list[str], list[str]]]:
    """As iter_records, with each record's own lines. A blank line (nothing but white space) is no record; a record
    whose every cell is blank (``,``, ``"   "``) is left out too, and counted in ``report``."""
    numbered = _Lines(lines, opts.comment)
    reader = csv.reader(
        numbered,
        delimiter=delimiter,
        quotechar=opts.quotechar,
        escapechar=opts.escapechar,
        quoting=csv.QUOTE_MINIMAL if opts.quotechar else csv.QUOTE_NONE,
    )
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a stray quote can swallow many lines
    try:
        for fields in reader:
            start, numbered.start = numbered.start or numbered.number, None
            if any(fields) and any(f.strip() for f in fields):  # any() first: C speed on long empty lines
                yield start, numbered.number, fields, numbered.kept
            elif report is not None and any(line.strip() for line in numbered.kept):
                report.count_blank(start)
    except csv.Error as exc:
        raise PipelineError(f"line {numbered.number}: {exc}") from exc


def sniff_delimiter(text: str, opts: ReadOptions) -> str | None:
    """The candidate (, ; tab |) that splits the first records into the most consistent number (>= 2) of fields.

    Ties go to csv.Sniffer's choice among the tied ones, then to the order above; None if no candidate splits.
    """
    sample = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS:
        sample = sample[: sample.rfind("\n") + 1] or sample
    scores = {}
    for delimiter in DELIMITERS:
        try:
            counts = [len(fields) for _, _, fields in _records(sample, delimiter, opts)[:200]]
        except PipelineError:
            continue
        if counts:
            width, hits = Counter(counts).most_common(1)[0]
            if width >= 2:
                scores[delimiter] = (round(hits / len(counts), 2), width)
    if not scores:
        return None
    best = max(scores.values())
    tied = [d for d in DELIMITERS if scores.get(d) == best]
    if len(tied) > 1:
        try:
            return csv.Sniffer().sniff(sample, delimiters="".join(tied)).delimiter
        except csv.Error:
            pass
    return tied[0]


def unique_names(names: list[str]) -> list[str]:
    """Header names stripped, blanks named by position, repeats suffixed like pandas (``a``, ``a.1``)."""
    seen: Counter[str] = Counter()
    out = []
    for i, name in enumerate(names, start=1):
        name = name.strip() or f"col{i}"
        out.append(name if not seen[name] else f"{name}.{seen[name]}")
        seen[name] += 1
    return out


def _unswallow(
    records: list[tuple[int, int, list[str]]], width: int, raw_lines: _Window, delimiter: str, opts: ReadOptions
) -> tuple[list[tuple[int, int, list[str]]], list[int]]:
    """Undo what an unclosed quote did: a record of the wrong width (or one whose quote was closed by a later
    line's) swallowed the lines after its first. That first line is split on the delimiter alone (the quote kept
    as a character) and the lines it swallowed are read again; returns the records and the lines read so."""
    out, literal = [], []
    for start, end, fields in records:
        if len(fields) == width and (start == end or _strictly_quoted(raw_lines[start - 1 : end], delimiter, opts)):
            out.append((start, end, fields))
            continue
        line = raw_lines.line(start).rstrip("\r\n")
        first = line.split(delimiter)
        if len(first) == width and opts.quotechar and opts.quotechar in line:
            out.append((start, start, first))
            literal.append(start)
        else:
            out.append((start, end if start == end else start, fields if start == end else first))
        if start < end:
            again = [(s + start, e + start, f) for s, e, f in _records("".join(raw_lines[start:end]), delimiter, opts)]
            more, more_literal = _unswallow(again, width, raw_lines, delimiter, opts)
            out += more
            literal += more_literal
    return out, literal


def _strictly_quoted(lines: list[str], delimiter: str, opts: ReadOptions) -> bool:
    """Whether a multi-line record is a well-quoted field with newlines: every closing quote is followed by the
    delimiter or the line end (a quote closed by the next record's opening quote is not)."""
    try:
        list(
            csv.reader(
                io.StringIO("".join(lines), newline=""),
                delimiter=delimiter,
                quotechar=opts.quotechar,
                escapechar=opts.escapechar,
                quoting=csv.QUOTE_MINIMAL if opts.quotechar else csv.QUOTE_NONE,
                strict=True,
            )
        )
    except csv.Error:
        return False
    return True


def read_delimited(text: str, delimiter: str, opts: ReadOptions, report: FileReport) -> pd.DataFrame:
    """Delimited text into a frame (see read_delimited_lines)."""
    return read_delimited_lines(io.StringIO(text, newline=""), delimiter, opts, report)


def read_delimited_lines(lines: Iterable[str], delimiter: str, opts: ReadOptions, report: FileReport) -> pd.DataFrame:
    """Delimited lines (read with ``newline=""``) into a frame; a record whose field count differs from the
    header's is malformed. Only the rows and the record being read are held, so a file can be read from disk.

    Without a header the columns are named col1, col2, ... and the most common field count is expected.
    """
    kept = _iter_kept(lines, delimiter, opts, report)
    if opts.header:
        first = next(kept, None)
        columns = unique_names(first[2]) if first else []
    else:
        listed = list(kept)
        width = Counter(len(f) for _, _, f, _ in listed).most_common(1)[0][0] if listed else 0
        columns = [f"col{i}" for i in range(1, width + 1)]
        kept = iter(listed)
    rows, literal = [], []
    for start, end, fields, own in kept:
        window = _Window(own, start)
        records, more_literal = _unswallow([(start, end, fields)], len(columns), window, delimiter, opts)
        literal += more_literal
        for first_line, last_line, cells in records:
            if len(cells) == len(columns):
                rows.append([f if f != "" else None for f in cells])
                continue
            raw = "".join(window[first_line - 1 : last_line]).rstrip("\r\n")
            report.bad_rows.append(BadRow(first_line, len(cells), len(columns), raw[:300]))
    if literal:
        shown = ", ".join(map(str, literal[:10])) + (", ..." if len(literal) > 10 else "")
        report.notes.append(
            f"{len(literal)} row(s) with an unclosed quote read with the quote as text: line(s) {shown}"
        )
    report.delimiter, report.header, report.columns = delimiter, opts.header, columns
    return pd.DataFrame(rows, columns=columns, dtype=object)


def apply_bad_row_policy(report: FileReport, policy: str) -> None:
    """error: refuse with line numbers and examples; warn: log each; skip: one summary line (reported anyway)."""
    bad = report.bad_rows
    if not bad:
        return
    lines = ", ".join(str(b.line) for b in bad[:20]) + (", ..." if len(bad) > 20 else "")
    if policy == "error":
        examples = "\n".join(
            f"  line {b.line}: {b.fields} fields, expected {b.expected}: {b.raw[:160]!r}" for b in bad[:MAX_EXAMPLES]
        )
        delimiter = DELIMITER_NAMES.get(report.delimiter or "", report.delimiter)
        why = (
            f"field count differs from the header's {len(report.columns)} with delimiter {delimiter}"
            if report.delimiter
            else "not one JSON object per line"
        )
        raise PipelineError(
            f"{report.file}: {len(bad)} malformed row(s) ({why}) at line(s) {lines}:\n{examples}\n"
            "Check data.delimiter / data.quotechar, or set data.bad_rows=skip (or warn) to leave them out "
            "(they are counted in the validation report)"
        )
    if policy == "warn":
        for b in bad:
            log.warning(
                "%s line %d: malformed row left out (%d fields, expected %d)", report.file, b.line, b.fields, b.expected
            )
    log.log(
        logging.WARNING if policy == "warn" else logging.INFO,
        "%s: %d malformed row(s) left out (data.bad_rows=%s) at line(s) %s",
        report.file,
        len(bad),
        policy,
        lines,
    )


# --- other formats ---------------------------------------------------------------------------------------------


def read_json(text: str, report: FileReport) -> pd.DataFrame:
    """A JSON array of objects (or one object holding such an array), else JSON lines (bad lines are malformed)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return _records_frame(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PipelineError(f"not valid JSON: {exc}") from exc
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines
        if isinstance(data, dict):
            arrays = [v for v in data.values() if isinstance(v, list)]
            return _records_frame(arrays[0] if len(arrays) == 1 else [data])
    rows = []
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            report.bad_rows.append(BadRow(number, 0, 0, line.rstrip("\r\n")[:300]))
    return _records_frame(rows)


def _records_frame(data: Any) -> pd.DataFrame:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise PipelineError("a JSON source must be an array of objects (one per row) or JSON lines")
    return pd.DataFrame.from_records(data) if data else pd.DataFrame()


def read_xlsx(raw: bytes, opts: ReadOptions, report: FileReport) -> pd.DataFrame:
    """One sheet of a workbook (data.sheet, default the first), every cell as a string."""
    from openpyxl import load_workbook

    try:
        sheets = load_workbook(io.BytesIO(raw), read_only=True).sheetnames
    except Exception as exc:  # openpyxl raises several types for a damaged workbook
        raise PipelineError(f"not a readable .xlsx workbook: {exc}") from exc
    if opts.sheet is not None and opts.sheet not in sheets:
        raise PipelineError(f"has no sheet {opts.sheet!r}; its sheets: {', '.join(sheets)} (set data.sheet)")
    sheet = opts.sheet or sheets[0]
    frame = pd.read_excel(
        io.BytesIO(raw), sheet_name=sheet, header=0 if opts.header else None, dtype=str, engine="openpyxl"
    )
    if opts.header:
        frame.columns = unique_names([str(c) if not str(c).startswith("Unnamed: ") else "" for c in frame.columns])
    else:
        frame.columns = [f"col{i}" for i in range(1, len(frame.columns) + 1)]
    frame = frame.dropna(how="all").astype(object).where(frame.notna(), None)
    report.header, report.columns = opts.header, list(frame.columns)
    report.notes.append(f"sheet {sheet!r} of {len(sheets)}: {', '.join(sheets)}")
    return frame.reset_index(drop=True)


def read_label_folders(
    directory: Path, opts: ReadOptions, split_aliases: dict[str, str]
) -> tuple[pd.DataFrame, list[FileReport]] | None:
    """``<label>/*.txt`` (or ``<split>/<label>/*.txt``): one text per file; None when the folder is not laid out so."""
    subdirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        return None
    split_dirs = [d for d in subdirs if d.name.lower() in split_aliases]
    if split_dirs and len(split_dirs) == len(subdirs):
        parts = [_label_tree(d, opts, split_aliases[d.name.lower()]) for d in split_dirs]
    else:
        parts = [_label_tree(directory, opts, None)]
    found = [p for p in parts if p is not None]
    if not found:
        return None
    return pd.concat([f for f, _ in found], ignore_index=True), [r for _, r in found]


def _label_tree(directory: Path, opts: ReadOptions, split: str | None) -> tuple[pd.DataFrame, FileReport] | None:
    rows, encodings, empty = [], Counter[str](), 0
    for label_dir in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(label_dir.glob("*.txt")):
            text, used = decode(read_bytes(path)[0], opts.encoding, path)
            encodings[used] += 1
            if text.strip():
                rows.append({"text": text.strip(), "label": label_dir.name} | ({"split": split} if split else {}))
            else:
                empty += 1
    if not rows:
        return None
    report = FileReport(
        f"{directory}/<label>/*.txt",
        "label-folders",
        rows=len(rows),
        encoding=", ".join(f"{e} ({n})" for e, n in encodings.items()),
        columns=list(rows[0]),
    )
    if empty:
        report.notes.append(f"{empty} empty .txt file(s) left out")
    return pd.DataFrame(rows), report


def expand_sources(source: str | list[str], base_dir: Path) -> list[Path]:
    """A path, a glob (``data/*.csv``) or a list of them, as existing paths (globs sorted, duplicates once)."""
    out: list[Path] = []
    for item in [source] if isinstance(source, str) else source:
        pattern = Path(item).expanduser()
        pattern = pattern if pattern.is_absolute() else base_dir / pattern
        if glob.has_magic(str(pattern)):
            matches = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
            if not matches:
                raise PipelineError(f"data.source pattern {item!r} matches no files (looked in {pattern.parent})")
            out += matches
        elif not pattern.exists():
            raise PipelineError(f"data source {pattern} does not exist (data.source={item!r})")
        else:
            out.append(pattern)
    return list(dict.fromkeys(out))
