"""The readers' parts, called directly on bytes and text (no ingest, no CLI): compression, binary refusal, encodings,
delimiter sniffing, header names, malformed rows and their policy, JSON shapes, label folders and source globs.
Fast enough for mutation testing; `test_ingest.py` and `test_data_sources.py` check the same through ingest."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data import readers
from pipeline.data.readers import BadRow, FileReport, ReadOptions
from pipeline.errors import PipelineError

OPTS = ReadOptions()


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(PipelineError) as err:
        call(*args, **kwargs)
    return str(err.value)


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --- FileReport ---------------------------------------------------------------------------------------------------


def test_blank_records_are_counted_with_their_first_lines():
    report = FileReport("f.csv", "csv")
    assert report.blank_note() is None
    for line in range(1, 13):
        report.count_blank(line * 2)
    assert report.blank_records == 12 and report.blank_lines == [line * 2 for line in range(1, 13)]
    assert report.blank_note() == (
        "12 record(s) of only blank cells left out at line(s) 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, ..."
    )
    few = FileReport("f.csv", "csv")
    for line in range(1, 11):
        few.count_blank(line)
    assert few.blank_note() == "10 record(s) of only blank cells left out at line(s) 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    few.count_blank(11)
    assert few.blank_note() == (
        "11 record(s) of only blank cells left out at line(s) 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ..."
    )


def test_blank_lines_kept_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(readers, "MAX_LINES_KEPT", 3)
    report = FileReport("f.csv", "csv")
    for line in range(5):
        report.count_blank(line)
    assert report.blank_records == 5 and report.blank_lines == [0, 1, 2]


def test_report_dict_names_the_delimiter_and_bounds_the_examples():
    report = FileReport("f.csv", "csv", delimiter="\t")
    report.bad_rows = [BadRow(line, 1, 2, f"row {line}") for line in range(1, 8)]
    out = report.to_dict()
    assert out["delimiter"] == "tab" and out["bad_row_count"] == 7
    assert out["bad_lines"] == [1, 2, 3, 4, 5, 6, 7]
    assert out["bad_rows"] == [{"line": n, "fields": 1, "expected": 2, "raw": f"row {n}"} for n in range(1, 6)]
    assert FileReport("f", "csv", delimiter=":").to_dict()["delimiter"] == ":"
    assert FileReport("f", "csv").to_dict()["delimiter"] is None
    assert readers.DELIMITER_NAMES == {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def test_read_options_default_to_an_rfc_csv_with_a_header():
    assert ReadOptions() == ReadOptions("auto", '"', None, True, None, "utf-8", "error", None)


# --- bytes: compression, binary files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("train.csv.gz", "train.csv"), ("TRAIN.CSV.GZ", "TRAIN.CSV"), ("a.jsonl.zip", "a.jsonl"), (".gz", ".gz")],
)
def test_data_name_drops_one_compression_suffix(name: str, expected: str):
    assert readers.data_name(Path("/x") / name) == expected
    assert readers.data_name(Path("plain.csv")) == "plain.csv"


def test_read_bytes_opens_gzip_and_a_zip_of_one_file(tmp_path: Path):
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"text\nhi\n"))
    assert readers.read_bytes(tmp_path / "a.csv.gz") == (b"text\nhi\n", "a.csv")
    (tmp_path / "a.zip").write_bytes(zipped({"folder/": b"", "__MACOSX/._x": b"junk", "folder/in.tsv": b"t\n"}))
    assert readers.read_bytes(tmp_path / "a.zip") == (b"t\n", "in.tsv")
    (tmp_path / "p.csv").write_bytes(b"PK\x03")  # too short to be a zip
    assert readers.read_bytes(tmp_path / "p.csv") == (b"PK\x03", "p.csv")


def test_read_bytes_names_a_workbook_by_its_xlsx_suffix(tmp_path: Path):
    book = zipped({"xl/workbook.xml": b"<workbook/>"})
    (tmp_path / "Book.XLSX").write_bytes(book)
    (tmp_path / "book.bin").write_bytes(book)
    assert readers.read_bytes(tmp_path / "Book.XLSX") == (book, "Book.XLSX")
    assert readers.read_bytes(tmp_path / "book.bin") == (book, "book.xlsx")


def test_read_bytes_refuses_missing_damaged_and_crowded_archives(tmp_path: Path):
    assert refusal(readers.read_bytes, tmp_path / "none.csv").startswith(f"cannot read {tmp_path / 'none.csv'}: ")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    assert refusal(readers.read_bytes, tmp_path / "bad.gz").startswith(f"{tmp_path / 'bad.gz'} is a damaged gzip")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    assert refusal(readers.read_bytes, tmp_path / "bad.zip").startswith(
        f"{tmp_path / 'bad.zip'} starts like a zip archive but is a damaged one: "
    )
    (tmp_path / "two.zip").write_bytes(zipped({"a.csv": b"x", "b.csv": b"y"}))
    assert refusal(readers.read_bytes, tmp_path / "two.zip") == (
        f"{tmp_path / 'two.zip'} holds 2 files (a.csv, b.csv); a zip source must hold exactly one: extract it and "
        "point data.source at the folder or a glob"
    )
    (tmp_path / "many.zip").write_bytes(zipped({f"{n}.csv": b"x" for n in range(7)}))
    assert "holds 7 files (0.csv, 1.csv, 2.csv, 3.csv, 4.csv); a zip" in refusal(
        readers.read_bytes, tmp_path / "many.zip"
    )
    (tmp_path / "none.zip").write_bytes(zipped({"d/": b""}))
    assert f"{tmp_path / 'none.zip'} holds 0 files ()" in refusal(readers.read_bytes, tmp_path / "none.zip")


def test_is_plain_and_streams_of_compressed_files(tmp_path: Path):
    (tmp_path / "a.csv").write_bytes(b"a\nb\n")
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"a\nb\nc\n"))
    (tmp_path / "a.zip").write_bytes(zipped({"in.csv": b"a\n" * 5}))
    assert readers.is_plain(tmp_path / "a.csv")
    assert not readers.is_plain(tmp_path / "a.csv.gz") and not readers.is_plain(tmp_path / "a.zip")
    assert readers.count_lines(tmp_path / "a.csv") == (2, 4)
    assert readers.count_lines(tmp_path / "a.csv.gz") == (3, 6)
    assert readers.count_lines(tmp_path / "a.zip") == (5, 10)
    for read in (readers.is_plain, readers.count_lines, readers.read_bytes):
        assert refusal(read, tmp_path / "none") == f"cannot read {tmp_path / 'none'}: No such file or directory"
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    assert f"{tmp_path / 'bad.gz'} is a damaged archive: " in refusal(readers.count_lines, tmp_path / "bad.gz")


def test_count_lines_adds_up_every_block(tmp_path: Path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"0123456789abcde\n" * 100_000)  # 1.6 MB: two blocks of 1 MiB
    assert readers.count_lines(path) == (100_000, 1_600_000)


def test_read_head_cuts_after_the_last_whole_line(tmp_path: Path):
    (tmp_path / "a.csv").write_bytes(b"one\ntwo\nthree\n")
    assert readers.read_head(tmp_path / "a.csv", 14) == readers.Head(b"one\ntwo\nthree\n", "a.csv", False)
    assert readers.read_head(tmp_path / "a.csv", 10) == readers.Head(b"one\ntwo\n", "a.csv", True)
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"one\ntwo\nthree\n"))
    assert readers.read_head(tmp_path / "a.csv.gz", 5) == readers.Head(b"one\n", "a.csv", True)
    book = zipped({"xl/workbook.xml": b"<workbook/>" * 10})
    (tmp_path / "b.xlsx").write_bytes(book)
    assert readers.read_head(tmp_path / "b.xlsx", 5) == readers.Head(book, "b.xlsx", False)


def test_whole_lines_keeps_characters_whole():
    assert readers._whole_lines(b"ab\ncd") == b"ab\n"
    assert readers._whole_lines(b"abcd") == b"abcd"  # one long line: cut where it was
    assert readers._whole_lines("abé".encode()[:-1]) == b"ab"  # a split two-byte character is dropped
    assert readers._whole_lines("a€".encode()[:-1]) == b"a"  # and a split three-byte one
    assert readers._whole_lines("a€".encode()) == b"a"  # a whole last one cannot be told from a cut one
    assert readers._whole_lines(b"abc") == b"abc"  # ASCII ends a character: nothing dropped
    assert readers._whole_lines("€".encode()[:-1]) == b""


def test_whole_lines_edges():
    assert readers._whole_lines(b"\nabc") == b"\n"  # a newline as the first byte
    assert readers._whole_lines("aÀ".encode()) == b"a"  # U+00C0 ends in 0x80, the lowest continuation byte
    assert readers._whole_lines(b"a\xc0") == b"a"  # 0xC0: the lowest lead byte
    assert readers._whole_lines(b"\x80\x80") == b"\x80\x80"  # shorter than a character: looked at whole
    # four continuation bytes are no character a cut split: left for the decoder to report
    assert readers._whole_lines(b"\xc3\x80\x80\x80\x80") == b"\xc3\x80\x80\x80\x80"


def test_whole_lines_in_utf16_and_utf32_count_in_their_code_units():
    for codec, bom in (("utf-16-le", codecs.BOM_UTF16_LE), ("utf-32-be", codecs.BOM_UTF32_BE)):
        raw = bom + "ab\ncd".encode(codec)
        assert readers._whole_lines(raw) == bom + "ab\n".encode(codec)
        long = bom + "abcd".encode(codec)
        assert readers._whole_lines(long[:-1]) == bom + "abc".encode(codec)
    # a byte pair that looks like a newline but straddles two UTF-16 characters is no newline
    straddle = codecs.BOM_UTF16_LE + "\u0a00\u0000x".encode("utf-16-le")
    assert readers._whole_lines(straddle) == codecs.BOM_UTF16_LE + "\u0a00\u0000x".encode("utf-16-le")
    # and the real newline just before such a pair is still found
    before = codecs.BOM_UTF16_LE + "ab\n\u0a00\u0000".encode("utf-16-le")
    assert readers._whole_lines(before) == codecs.BOM_UTF16_LE + "ab\n".encode("utf-16-le")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"%PDF-1.7", "a PDF document"),
        (b"\x89PNG\r\n", "a PNG image"),
        (b"\xff\xd8\xff\xe0", "a JPEG image"),
        (b"PAR1....", "a Parquet file (set data.format=parquet or name it .parquet)"),
        (b"\xd0\xcf\x11\xe0\xa1", "an old binary .xls workbook (save it as .xlsx or CSV)"),
        (b"SQLite format 3\x00", "an SQLite database"),
    ],
)
def test_binary_files_are_named_by_their_kind(raw: bytes, kind: str):
    assert refusal(readers.refuse_binary, raw, Path("f.csv")) == f"f.csv is not a text file: it is {kind}"


def test_nul_bytes_refuse_a_file_unless_a_bom_says_utf16_or_32():
    assert refusal(readers.refuse_binary, b"text\x00here", Path("f.csv")) == (
        "f.csv is not a text file (it holds NUL bytes): point data.source at CSV/TSV/JSON/text/xlsx/parquet"
    )
    for bom, _ in readers.BOMS:
        readers.refuse_binary(bom + b"t\x00e\x00", Path("f.csv"))
    readers.refuse_binary(b"x" * 8192 + b"\x00", Path("f.csv"))  # only the first 8 KiB are looked at
    assert "NUL bytes" in refusal(readers.refuse_binary, b"x" * 8191 + b"\x00", Path("f.csv"))


# --- encodings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bom", "codec", "name"),
    [
        (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
        (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    ],
)
@pytest.mark.parametrize("encoding", ["auto", "utf-8", "UTF_8", "utf8", "utf-8-sig"])
def test_a_bom_wins(tmp_path: Path, bom: bytes, codec: str, name: str, encoding: str):
    raw = bom + "é;joy\n".encode(codec)
    assert readers.decode(raw, encoding, Path("f.csv")) == ("é;joy\n", name)
    (tmp_path / "f.csv").write_bytes(raw)
    assert readers.stream_encoding(tmp_path / "f.csv", encoding) == name


def test_a_bom_on_bytes_that_are_not_its_encoding_is_refused():
    message = refusal(readers.decode, codecs.BOM_UTF8 + b"\xff", "auto", Path("f.csv"))
    assert message == (
        "f.csv starts with a utf-8-sig byte-order mark but is not utf-8-sig text (invalid start byte at byte 0): "
        "re-encode it as UTF-8"
    )


def test_utf8_by_default_and_cp1252_then_latin1_only_with_auto():
    assert readers.decode("é\n".encode(), "utf-8", Path("f")) == ("é\n", "utf-8")
    assert readers.decode("é\n".encode(), "auto", Path("f")) == ("é\n", "utf-8")
    cp1252 = "café – 20€\n".encode("cp1252")
    assert readers.decode(cp1252, "auto", Path("f")) == ("café – 20€\n", "cp1252")
    assert readers.decode(b"\x81x", "auto", Path("f")) == ("\x81x", "latin-1")  # undefined in cp1252
    assert refusal(readers.decode, cp1252, "utf-8", Path("f.csv")) == (
        "f.csv is not UTF-8 text (invalid continuation byte at byte 3); re-encode it as UTF-8, or set "
        "data.encoding=auto (UTF-8, then cp1252) or the file's encoding"
    )


def test_a_named_encoding_is_used_as_named():
    assert readers.decode("é".encode("latin-1"), "latin-1", Path("f")) == ("é", "latin-1")
    assert readers.decode("é".encode("cp1252"), "CP1252", Path("f")) == ("é", "CP1252")
    assert refusal(readers.decode, "€".encode(), "ascii", Path("f.csv")) == (
        "f.csv is not ascii text (ordinal not in range(128) at byte 0); set data.encoding to the file's encoding, "
        "or auto"
    )
    assert (
        refusal(readers.decode, b"%PDF", "latin-1", Path("f.csv")) == "f.csv is not a text file: it is a PDF document"
    )


def test_stream_encoding_chooses_as_decode_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    path = tmp_path / "f.csv"
    path.write_bytes("é\n".encode() * 10)
    assert readers.stream_encoding(path, "auto") == "utf-8"
    assert readers.stream_encoding(path, "latin-1") == "latin-1"
    path.write_bytes("é\n".encode() * 10 + "€".encode()[:2])  # cut inside a character at the very end
    assert readers.stream_encoding(path, "utf-8") == "utf-8"  # not auto: no fallback (the reader will say why)
    with caplog.at_level(logging.INFO, logger=readers.__name__):
        assert readers.stream_encoding(path, "auto") == "cp1252"
    assert caplog.messages == [f"{path} is not UTF-8: read as cp1252 (data.encoding=auto)"]
    monkeypatch.setattr(readers, "FALLBACK_ENCODING", "latin-1")  # the fallback is read from one place
    assert readers.stream_encoding(path, "auto") == "latin-1"
    path.write_bytes(b"%PDF-1.4")
    assert refusal(readers.stream_encoding, path, "latin-1") == f"{path} is not a text file: it is a PDF document"


def test_stream_encoding_reads_the_whole_file_block_by_block(tmp_path: Path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"a" * (1 << 20) + b"\xe9\n")  # the bad byte lies in the second block
    assert readers.stream_encoding(path, "auto") == "cp1252"
    path.write_bytes(b"a" * ((1 << 20) - 1) + "é".encode())  # a character split across the blocks is fine
    assert readers.stream_encoding(path, "auto") == "utf-8"


# --- delimited text --------------------------------------------------------------------------------------------------


def test_records_number_physical_lines_and_leave_out_blank_lines_and_comments():
    text = '# note\nid,text\n\n1,"two\nlines"\n  \n# not a comment inside nothing\n2,x\n'
    opts = ReadOptions(comment="#")
    assert readers._records(text, ",", opts) == [
        (2, 2, ["id", "text"]),
        (4, 5, ["1", "two\nlines"]),
        (8, 8, ["2", "x"]),
    ]
    assert readers._records("# a,b\n", ",", ReadOptions()) == [(1, 1, ["# a", "b"])]  # no comment setting


def test_records_of_blank_cells_are_counted_not_kept():
    report = FileReport("f", "csv")
    text = "a,b\n,\n\n  ,  \n1,2\n"
    assert list(readers.iter_records(io.StringIO(text, newline=""), ",", OPTS, report)) == [
        (1, 1, ["a", "b"]),
        (5, 5, ["1", "2"]),
    ]
    assert report.blank_records == 2 and report.blank_lines == [2, 4]


def test_a_csv_error_names_its_line():
    lines = ["a,b\n", "1,x\ry\n"]  # a carriage return inside a line the reader was handed whole
    message = refusal(list, readers.iter_records(lines, ",", OPTS))
    assert message.startswith("line 2: new-line character seen in unquoted field")


def test_a_configured_quote_character_quotes():
    assert readers._records("'a,b',c\n", ",", ReadOptions(quotechar="'")) == [(1, 1, ["a,b", "c"])]


def test_quoting_none_without_a_quotechar():
    assert readers._records('a,"b\n', ",", ReadOptions(quotechar=None)) == [(1, 1, ["a", '"b'])]
    assert readers._records("a\\,b,c\n", ",", ReadOptions(escapechar="\\")) == [(1, 1, ["a,b", "c"])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b\n1,2\n3,4\n", ","),
        ("a;b\n1;2\n3;4\n", ";"),
        ("a\tb\n1\t2\n", "\t"),
        ("a|b|c\n1|2|3\n", "|"),
        ("just one column\nsecond\n", None),
        ("", None),
    ],
)
def test_sniff_delimiter(text: str, expected: str | None):
    assert readers.sniff_delimiter(text, OPTS) == expected


def test_sniff_prefers_the_most_consistent_then_the_widest_split():
    text = "a,b;c\n1,2;3\n4,5;6\n7;8\n"  # ; splits all four records in two, , only three
    assert readers.sniff_delimiter(text, OPTS) == ";"
    wide = "a;b;c,d\n1;2;3,4\n"  # both split every record: the wider split wins
    assert readers.sniff_delimiter(wide, OPTS) == ";"


def test_a_tie_goes_to_the_sniffer_then_to_the_listed_order():
    assert readers.sniff_delimiter("a;b,c\n1;2,3\n", OPTS) == csv.Sniffer().sniff("a;b,c\n1;2,3\n", ";,").delimiter
    assert readers.sniff_delimiter("ab|cd\tef\n", OPTS) == "\t"  # the sniffer gives up: tab is listed before pipe


def test_sniff_looks_at_a_bounded_sample_cut_at_a_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(readers, "SNIFF_CHARS", 20)
    text = "a;b\n1;2\n3;4\n5;6\n" + "x,y,z\n" * 50
    assert readers.sniff_delimiter(text, OPTS) == ";"
    assert readers.sniff_delimiter("a;b;c;d;e;f;g;h;i;j;k;l\n", OPTS) == ";"  # no newline in the sample


def test_sniff_splits_lines_on_a_lone_carriage_return():
    assert readers.sniff_delimiter("a;b\rc;d\re;f\r", OPTS) == ";"


def test_sniff_cuts_a_long_sample_at_its_last_line_end(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(readers, "SNIFF_CHARS", 11)
    assert readers.sniff_delimiter("a,b\nc;d\ne;f", OPTS) == ";"  # no longer than the sample: read whole
    assert readers.sniff_delimiter("a,b\nc;d\ne;f;g\n", OPTS) == ","  # the cut "e;f" is not looked at
    monkeypatch.setattr(readers, "SNIFF_CHARS", 20)
    assert readers.sniff_delimiter("a,b\nc;d\ne;f\ng;h\ni;j\n" + "k,l\n" * 10, OPTS) == ";"


def test_sniff_rounds_consistency_to_two_places_then_prefers_the_wider_split():
    assert readers.sniff_delimiter("a;b,c,d\n" * 6 + "e;f\n" * 4, OPTS) == ";"  # 100% in 2 beats 60% in 3
    near_tie = "a;b,c,d\n" * 198 + "e;f\n" + "g\n"  # ; 199 of 200 in 2, , 198 of 200 in 3: both 0.99
    assert readers.sniff_delimiter(near_tie, OPTS) == ","
    assert readers.sniff_delimiter("a,b\n" * 100 + "c;d\n" * 101, OPTS) == ","  # the 201st record is not counted


def test_sniff_counts_the_first_200_records():
    assert readers.sniff_delimiter("a,b\n" * 300 + "c;d;e;f\n" * 10, OPTS) == ","  # the first 200 records count


def test_unique_names_like_pandas():
    assert readers.unique_names([" a ", "", "a", "a", "b", "  "]) == ["a", "col2", "a.1", "a.2", "b", "col6"]


def test_read_delimited_with_a_header_and_malformed_rows():
    report = FileReport("f.csv", "csv")
    frame = readers.read_delimited("text,label\nhi,joy\nno label\n,sadness\nx,y,z\n", ",", OPTS, report)
    assert frame.to_dict("list") == {"text": ["hi", None], "label": ["joy", "sadness"]}
    assert report.bad_rows == [BadRow(3, 1, 2, "no label"), BadRow(5, 3, 2, "x,y,z")]
    assert (report.delimiter, report.header, report.columns) == (",", True, ["text", "label"])
    assert frame.dtypes.tolist() == [object, object]


def test_read_delimited_without_a_header_expects_the_most_common_width():
    report = FileReport("f.csv", "csv")
    opts = ReadOptions(header=False)
    frame = readers.read_delimited("a;1\nb;2\nc\nd;4\n", ";", opts, report)
    assert frame.columns.tolist() == ["col1", "col2"] and frame["col1"].tolist() == ["a", "b", "d"]
    assert report.bad_rows == [BadRow(3, 1, 2, "c")] and report.header is False
    empty = readers.read_delimited("", ";", opts, FileReport("f", "csv"))
    assert empty.empty and empty.columns.tolist() == []
    assert readers.read_delimited("", ",", OPTS, FileReport("f", "csv")).columns.tolist() == []


def test_an_unclosed_quote_is_read_as_text_and_noted():
    report = FileReport("f.csv", "csv")
    frame = readers.read_delimited('text,label\n"oops,joy\nfine,sadness\n', ",", OPTS, report)
    assert frame.to_dict("list") == {"text": ['"oops', "fine"], "label": ["joy", "sadness"]}
    assert report.notes == ["1 row(s) with an unclosed quote read with the quote as text: line(s) 2"]
    assert report.bad_rows == []


def test_many_unclosed_quotes_are_listed_up_to_ten():
    report = FileReport("f.csv", "csv")
    body = "".join(f'"t{i},joy\nfine {i},sadness\n' for i in range(12))
    frame = readers.read_delimited("text,label\n" + body, ",", OPTS, report)
    assert len(frame) == 24
    assert report.notes == [
        "12 row(s) with an unclosed quote read with the quote as text: line(s) 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, ..."
    ]


def test_unclosed_quotes_are_listed_with_dots_only_past_ten():
    def note(count: int) -> str:
        report = FileReport("f.csv", "csv")
        readers.read_delimited("text,label\n" + "".join(f'"t{i},joy\n' for i in range(count)), ",", OPTS, report)
        return report.notes[0]

    assert note(10).endswith("line(s) 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")
    assert note(11).endswith("line(s) 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...")


def test_a_bad_rows_raw_text_is_kept_as_written_up_to_300_characters():
    report = FileReport("f.csv", "csv")
    readers.read_delimited("a,b\nx,y,zX\n" + ",".join(["w" * 100] * 4) + "\r\n", ",", OPTS, report)
    assert [b.raw for b in report.bad_rows] == ["x,y,zX", ",".join(["w" * 100] * 4)[:300]]


def test_a_quoted_field_with_newlines_is_one_row():
    report = FileReport("f.csv", "csv")
    frame = readers.read_delimited('text,label\n"two\nlines",joy\n"a ""q""",x\n', ",", OPTS, report)
    assert frame["text"].tolist() == ["two\nlines", 'a "q"'] and report.notes == [] and report.bad_rows == []


def test_a_quote_closed_by_the_next_record_gives_the_lines_back():
    report = FileReport("f.csv", "csv")
    text = 'text,label\n"he said "hi,joy\n"next",sadness\nlast,fear\n'
    frame = readers.read_delimited(text, ",", OPTS, report)
    assert frame["label"].tolist()[-2:] == ["sadness", "fear"] and len(frame) == 3


def test_a_swallowed_line_of_the_wrong_width_is_a_bad_row_at_its_line():
    report = FileReport("f.csv", "csv")
    text = 'text,label\n"a,b,c\nd,e\n'  # the unclosed quote's line has three fields: not read as text
    readers.read_delimited(text, ",", OPTS, report)
    assert [(b.line, b.fields, b.expected) for b in report.bad_rows] == [(2, 3, 2)]
    assert report.bad_rows[0].raw == '"a,b,c' and report.notes == []


def test_a_multi_line_record_that_is_not_strictly_quoted_gives_its_lines_back():
    report = FileReport("f.csv", "csv")
    frame = readers.read_delimited('text,label\n"a\nb" x,joy\nc,d\n"e\nf",g\n', ",", OPTS, report)
    assert frame.to_dict("list") == {"text": ['b" x', "c", "e\nf"], "label": ["joy", "d", "g"]}
    assert report.bad_rows == [BadRow(2, 1, 2, '"a')] and report.notes == []


def test_lines_an_unclosed_quote_swallowed_keep_their_numbers():
    report = FileReport("f.csv", "csv")
    frame = readers.read_delimited('text,label\n"a,1\nb,2,x\nc,3\n', ",", OPTS, report)
    assert frame.to_dict("list") == {"text": ['"a', "c"], "label": ["1", "3"]}
    assert report.bad_rows == [BadRow(3, 3, 2, "b,2,x")]
    assert report.notes == ["1 row(s) with an unclosed quote read with the quote as text: line(s) 2"]


def test_a_row_read_with_its_quote_as_text_keeps_its_last_cell_as_written():
    report = FileReport("f.csv", "csv")
    frame = readers.read_delimited('text,label\n"a,b \n"c,dX\nfine,ok\n', ",", OPTS, report)
    assert frame.to_dict("list") == {"text": ['"a', '"c', "fine"], "label": ["b ", "dX", "ok"]}


def test_a_single_line_row_of_the_wrong_width_counts_its_csv_fields():
    report = FileReport("f.csv", "csv")
    readers.read_delimited('x,y\n"a,b",c,d  \n', ",", OPTS, report)
    assert report.bad_rows == [BadRow(2, 3, 2, '"a,b",c,d  ')] and report.notes == []


def test_read_delimited_keeps_line_ends_inside_cells_and_splits_on_a_lone_cr():
    report = FileReport("f.csv", "csv")
    assert readers.read_delimited('text,label\n"x\r\ny",b\n,\n', ",", OPTS, report).to_dict("list") == {
        "text": ["x\r\ny"],
        "label": ["b"],
    }
    assert report.blank_records == 1 and report.blank_lines == [4]
    assert readers.read_delimited("text,label\rhi,joy\r", ",", OPTS, FileReport("f", "csv")).to_dict("list") == {
        "text": ["hi"],
        "label": ["joy"],
    }


def test_strictly_quoted():
    assert readers._strictly_quoted(['"a\n', 'b",c\n'], ",", OPTS)
    assert not readers._strictly_quoted(['"a" x,c\n'], ",", OPTS)
    assert readers._strictly_quoted(['"a\n', 'b"', ",c\n"], ",", OPTS)  # joined as they are
    assert readers._strictly_quoted(['"x\n', 'y",a\rb\n'], ",", OPTS)  # a lone CR is a line end


def test_strictly_quoted_reads_with_the_files_settings():
    assert readers._strictly_quoted(['"a\n', 'b";c\n'], ";", OPTS)
    single = ReadOptions(quotechar="'")
    assert readers._strictly_quoted(["'a\n", "b',c\n"], ",", single)
    assert not readers._strictly_quoted(["'a\n", "b'x,c\n"], ",", single)
    assert readers._strictly_quoted(['"a\\"b\n', 'c",d\n'], ",", ReadOptions(escapechar="\\"))
    assert readers._strictly_quoted(["a,b\n"], ",", ReadOptions(quotechar=None))


def test_window_indexes_lines_as_the_file_does():
    window = readers._Window(["l5\n", "l6\n", "l7\n"], 5)
    assert window[4:6] == ["l5\n", "l6\n"] and window.line(7) == "l7\n"


def test_bad_row_policy_error_lists_lines_and_examples():
    report = FileReport("f.csv", "csv", delimiter=";", columns=["a", "b"])
    report.bad_rows = [BadRow(n, 3, 2, "x" * 200) for n in range(1, 23)]
    message = refusal(readers.apply_bad_row_policy, report, "error")
    lines = ", ".join(str(n) for n in range(1, 21)) + ", ..."
    example = "x" * 160
    examples = "\n".join(f"  line {n}: 3 fields, expected 2: {example!r}" for n in range(1, 6))
    assert message == (
        f"f.csv: 22 malformed row(s) (field count differs from the header's 2 with delimiter semicolon) at "
        f"line(s) {lines}:\n{examples}\nCheck data.delimiter / data.quotechar, or set data.bad_rows=skip (or warn) "
        "to leave them out (they are counted in the validation report)"
    )
    json_report = FileReport("f.jsonl", "jsonl", bad_rows=[BadRow(4, 0, 0, "[1]")])
    assert refusal(readers.apply_bad_row_policy, json_report, "error").startswith(
        "f.jsonl: 1 malformed row(s) (not one JSON object per line) at line(s) 4:\n  line 4: 0 fields, expected 0: "
        "'[1]'\n"
    )


def test_bad_row_policy_lists_twenty_lines_then_dots_and_names_any_delimiter():
    def message(count: int, delimiter: str) -> str:
        report = FileReport("f.csv", "csv", delimiter=delimiter, columns=["a", "b"])
        report.bad_rows = [BadRow(n, 3, 2, "x") for n in range(1, count + 1)]
        return refusal(readers.apply_bad_row_policy, report, "error")

    twenty = ", ".join(str(n) for n in range(1, 21))
    assert f"at line(s) {twenty}:\n" in message(20, ",")
    assert f"at line(s) {twenty}, ...:\n" in message(21, ",")
    assert "field count differs from the header's 2 with delimiter :" in message(1, ":")
    assert "with delimiter comma" in message(1, ",")


def test_bad_row_policy_warn_and_skip_log(caplog: pytest.LogCaptureFixture):
    report = FileReport("f.csv", "csv", delimiter=",", bad_rows=[BadRow(3, 1, 2, "x"), BadRow(9, 4, 2, "y")])
    with caplog.at_level(logging.INFO, logger=readers.__name__):
        readers.apply_bad_row_policy(report, "warn")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "f.csv line 3: malformed row left out (1 fields, expected 2)"),
        (logging.WARNING, "f.csv line 9: malformed row left out (4 fields, expected 2)"),
        (logging.WARNING, "f.csv: 2 malformed row(s) left out (data.bad_rows=warn) at line(s) 3, 9"),
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=readers.__name__):
        readers.apply_bad_row_policy(report, "skip")
        readers.apply_bad_row_policy(FileReport("g.csv", "csv"), "error")  # nothing bad: nothing said
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "f.csv: 2 malformed row(s) left out (data.bad_rows=skip) at line(s) 3, 9"),
    ]


# --- JSON, workbooks, label folders, sources -----------------------------------------------------------------------


def test_read_json_array_object_and_lines():
    report = FileReport("f.json", "json")
    assert readers.read_json(' [{"text": "a"}, {"text": "b"}]', report).to_dict("list") == {"text": ["a", "b"]}
    assert readers.read_json('{"rows": [{"text": "a"}], "n": 1}', report).to_dict("list") == {"text": ["a"]}
    assert readers.read_json('{"text": "a", "label": "joy"}', report).to_dict("list") == {
        "text": ["a"],
        "label": ["joy"],
    }
    two_arrays = '{"a": [1], "b": [2]}'
    assert readers.read_json(two_arrays, report).to_dict("list") == {"a": [[1]], "b": [[2]]}
    lines = '{"text": "a"}\n\n[1]\nnot json\n{"text": "b"}\n'
    frame = readers.read_json(lines, report)
    assert frame.to_dict("list") == {"text": ["a", "b"]}
    assert report.bad_rows == [BadRow(3, 0, 0, "[1]"), BadRow(4, 0, 0, "not json")]
    assert readers.read_json("", FileReport("f", "json")).empty


def test_read_json_lines_split_on_any_newline_and_keep_bad_lines_as_they_were():
    report = FileReport("f.jsonl", "jsonl")
    text = '{"text": "a"}\r{"text": "b"}\r\nnot json  \nbadX\n' + "y" * 400 + "\n"
    assert readers.read_json(text, report)["text"].tolist() == ["a", "b"]
    assert [(b.line, b.raw) for b in report.bad_rows] == [(3, "not json  "), (4, "badX"), (5, "y" * 300)]


def test_read_json_refuses_what_is_no_table():
    assert refusal(readers.read_json, "[1, 2]", FileReport("f", "json")) == (
        "a JSON source must be an array of objects (one per row) or JSON lines"
    )
    assert refusal(readers.read_json, "[{", FileReport("f", "json")).startswith("not valid JSON: ")
    assert readers.read_json("[]", FileReport("f", "json")).empty


def test_read_xlsx_sheets_headers_and_blank_rows(tmp_path: Path):
    path = tmp_path / "b.xlsx"
    with pd.ExcelWriter(path) as writer:
        one = pd.DataFrame({"text": ["a", None, "c", "d"], "n": [1, None, 3, None]})
        one.to_excel(writer, sheet_name="one", index=False)
        pd.DataFrame({"x": ["z"]}).to_excel(writer, sheet_name="two", index=False)
    raw = path.read_bytes()
    report = FileReport("b.xlsx", "xlsx")
    frame = readers.read_xlsx(raw, OPTS, report)
    assert frame.to_dict("list") == {"text": ["a", "c", "d"], "n": ["1", "3", None]}
    assert frame.index.tolist() == [0, 1, 2]
    assert report.notes == ["sheet 'one' of 2: one, two"] and report.columns == ["text", "n"]
    second = readers.read_xlsx(raw, ReadOptions(sheet="two", header=False), FileReport("b", "xlsx"))
    assert second.to_dict("list") == {"col1": ["x", "z"]}
    assert refusal(readers.read_xlsx, raw, ReadOptions(sheet="three"), FileReport("b", "xlsx")) == (
        "has no sheet 'three'; its sheets: one, two (set data.sheet)"
    )
    assert refusal(readers.read_xlsx, b"PK\x03\x04junk", OPTS, FileReport("b", "xlsx")).startswith(
        "not a readable .xlsx workbook: "
    )


def test_read_xlsx_names_unnamed_columns_by_position(tmp_path: Path):
    path = tmp_path / "b.xlsx"
    pd.DataFrame([["a", "b", "c"]], columns=["text", None, "text"]).to_excel(path, index=False)
    frame = readers.read_xlsx(path.read_bytes(), OPTS, FileReport("b", "xlsx"))
    assert frame.columns.tolist() == ["text", "col2", "text.1"]


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def test_label_folders_with_and_without_splits(tmp_path: Path):
    write(tmp_path / "flat" / "joy" / "1.txt", " happy \n")
    write(tmp_path / "flat" / "sad" / "1.txt", "down")
    write(tmp_path / "flat" / "sad" / "2.txt", "   ")
    write(tmp_path / "flat" / "sad" / "4.txt", "")
    write(tmp_path / "flat" / "sad" / "3.md", "not a text file")
    write(tmp_path / "flat" / ".hidden" / "1.txt", "left out")
    frame, (report,) = readers.read_label_folders(tmp_path / "flat", OPTS, {"train": "train"})
    assert frame.to_dict("list") == {"text": ["happy", "down"], "label": ["joy", "sad"]}
    assert report.file == f"{tmp_path / 'flat'}/<label>/*.txt" and report.format == "label-folders"
    assert (report.rows, report.encoding, report.columns) == (2, "utf-8 (4)", ["text", "label"])
    assert report.notes == ["2 empty .txt file(s) left out"]
    write(tmp_path / "split" / "TRAIN" / "joy" / "1.txt", "yay")
    write(tmp_path / "split" / "dev" / "sad" / "1.txt", "meh")
    frame, reports = readers.read_label_folders(tmp_path / "split", OPTS, {"train": "train", "dev": "validation"})
    assert frame.to_dict("list") == {
        "text": ["yay", "meh"],  # folders in sorted order: "TRAIN" before "dev"
        "label": ["joy", "sad"],
        "split": ["train", "validation"],
    }
    assert len(reports) == 2 and reports[0].notes == [] and frame.index.tolist() == [0, 1]
    write(tmp_path / "split" / "README.md", "a file beside the split folders")
    (tmp_path / "split" / ".cache").mkdir()  # and a hidden folder: neither makes it a label layout
    again, _ = readers.read_label_folders(tmp_path / "split", OPTS, {"train": "train", "dev": "validation"})
    pd.testing.assert_frame_equal(again, frame)


def test_label_folders_that_are_not_laid_out_so(tmp_path: Path):
    write(tmp_path / "a.csv", "x")
    assert readers.read_label_folders(tmp_path, OPTS, {}) is None
    write(tmp_path / "joy" / "empty.txt", "")
    assert readers.read_label_folders(tmp_path, OPTS, {}) is None
    write(tmp_path / "train" / "readme.md", "no labels")  # split folders without label folders
    write(tmp_path / "joy" / "1.txt", "x")
    frame, _ = readers.read_label_folders(tmp_path, OPTS, {"train": "train"})
    assert frame["label"].tolist() == ["joy"]  # not every folder is a split: the labels are read
    only_split = tmp_path / "only"
    write(only_split / "train" / "readme.md", "no labels")
    assert readers.read_label_folders(only_split, OPTS, {"train": "train"}) is None


def test_label_folders_decode_as_configured(tmp_path: Path):
    write(tmp_path / "joy" / "1.txt", "café".encode("cp1252"))
    write(tmp_path / "joy" / "2.txt", "olé")
    frame, (report,) = readers.read_label_folders(tmp_path, ReadOptions(encoding="auto"), {})
    assert frame["text"].tolist() == ["café", "olé"] and report.encoding == "cp1252 (1), utf-8 (1)"


def test_a_label_file_that_is_no_text_is_named(tmp_path: Path):
    write(tmp_path / "joy" / "scan.txt", b"%PDF-1.4")
    message = refusal(readers.read_label_folders, tmp_path, OPTS, {})
    assert message == f"{tmp_path / 'joy' / 'scan.txt'} is not a text file: it is a PDF document"


def test_expand_sources_paths_globs_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("b.csv", "a.csv", "sub/c.csv"):
        write(tmp_path / name, "x")
    (tmp_path / "d.csv").mkdir()  # a folder matching the glob is no file
    monkeypatch.setenv("HOME", str(tmp_path))
    assert readers.expand_sources("*.csv", tmp_path) == [tmp_path / "a.csv", tmp_path / "b.csv"]
    assert readers.expand_sources("**/*.csv", tmp_path) == [tmp_path / p for p in ("a.csv", "b.csv", "sub/c.csv")]
    listed = ["b.csv", "*.csv", "~/sub/c.csv", "sub/c.csv"]  # in the order listed, each once
    assert readers.expand_sources(listed, tmp_path) == [tmp_path / "b.csv", tmp_path / "a.csv", tmp_path / "sub/c.csv"]
    assert readers.expand_sources(str(tmp_path / "sub"), Path("/elsewhere")) == [tmp_path / "sub"]


def test_expand_sources_refuses_what_is_not_there(tmp_path: Path):
    assert refusal(readers.expand_sources, "*.tsv", tmp_path) == (
        f"data.source pattern '*.tsv' matches no files (looked in {tmp_path})"
    )
    assert refusal(readers.expand_sources, ["none.csv"], tmp_path) == (
        f"data source {tmp_path / 'none.csv'} does not exist (data.source='none.csv')"
    )
