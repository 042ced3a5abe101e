"""Hostile and careless input to the operator scripts (enqueue, export) against moto server DynamoDB.

A rejected line is reported by its number and the fields and limits at fault, never by what it holds;
one unreadable line never stops the others; CSV exports never hand a spreadsheet a formula.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from handler.domain.answers import Metrics, ModelInfo
from handler.domain.requests import parse_request
from handler.domain.stored_item import done_fields
from handler.formats.prompts import PROMPT_VERSION
from handler.storage.result_store import ResultStore
from scripts.batch import enqueue as enqueue_script
from scripts.batch import export as export_results
from tests.support.local_aws import DUMMY_AWS, Table

#: Put into every user value below; no output of a script about a rejected line may contain it.
MARKER = "zq-script-marker-5c1e"
#: The served model the request ids are made for: a manifest pinning its sha256 (no model file needed).
MODEL = "phi-3-mini-4k-instruct-q4"


@pytest.fixture
def table_env(monkeypatch: pytest.MonkeyPatch, results_table: Table) -> Table:
    """A fresh results table on moto server, and the environment the scripts reach it with."""
    for key, value in DUMMY_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", results_table.endpoint_url)
    return results_table


def _valid(text: str = "Gradient boosting builds trees one after another.") -> dict[str, Any]:
    return {"task": "summarize", "text": text, "options": {"max_tokens": 8}}


def _enqueue(
    path: Path, table: Table, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *extra: str
) -> tuple[int, str]:
    """Run the enqueue script on ``path``: its exit code and everything it printed or logged."""
    code = enqueue_script.main([str(path), "--table", table.name, "--model", MODEL, *extra])
    printed = capsys.readouterr()
    logged = "\n".join(json.dumps(vars(record), default=str) for record in caplog.records)
    return code, "\n".join((printed.out, printed.err, logged))


def _reported(output: str) -> dict[int, str]:
    """The invalid lines the script reported: line number to its report."""
    lines = [line.strip() for line in output.splitlines() if line.startswith("  line ")]
    return {int(line.split()[1].rstrip(":")): line.split(": ", 1)[1] for line in lines}


# -- (a) a rejected line is named by its number and its fields, never by its content ----------------

BAD_LINES: list[tuple[str, str]] = [
    (json.dumps({"task": "summarize", "text": MARKER * 15000}), "text: String should have at most 300000 characters"),
    (
        json.dumps({"task": "translate", "text": "hello", "target_language": f'=HYPERLINK("{MARKER}")'}),
        "target_language: String should match pattern",
    ),
    (json.dumps({"task": f"=cmd|'/c calc'!{MARKER}", "text": "hello"}), "task: unknown task; expected one of"),
    (json.dumps({**_valid(), f"=evil-{MARKER}": 1}), "<unknown field>: Extra inputs are not permitted"),
    (json.dumps({**_valid(), "options": {f"@{MARKER}": 1}}), "options.<unknown field>: Extra inputs are not permitted"),
    (
        json.dumps({**_valid(), "options": {"temperature": MARKER}}),
        "options.temperature: Input should be a valid number",
    ),
    (json.dumps({**_valid(), "options": {"max_tokens": 10**6}}), "options.max_tokens: Input should be less than or"),
    (json.dumps({"task": "chat", "messages": [{"role": f"-{MARKER}", "content": "hi"}]}), "messages.0.role: Input"),
    (json.dumps(f"=SUM(A1:A9)+{MARKER}"), "event must be a JSON object, got str"),
    (json.dumps([f"+{MARKER}"]), "event must be a JSON object, got list"),
    (f"{MARKER} is not JSON", "not JSON: Expecting value at column 1"),
]


@pytest.mark.parametrize(("bad_line", "expected"), BAD_LINES, ids=range(len(BAD_LINES)))
def test_a_rejected_jsonl_line_is_reported_by_number_and_field_never_by_content(
    bad_line: str,
    expected: str,
    table_env: Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a JSONL file whose second line is invalid and carries the marker
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join([json.dumps(_valid()), bad_line, json.dumps(_valid("Another text."))]) + "\n")

    # WHEN it is enqueued
    code, output = _enqueue(source, table_env, capsys, caplog)

    # THEN line 2 is reported with its field and problem, the others are queued, and the marker is nowhere
    assert code == 1
    assert list(_reported(output)) == [2]
    assert _reported(output)[2].startswith(expected), output
    assert MARKER not in output
    assert len(table_env.items()) == 2


def test_a_rejected_csv_row_is_reported_by_number_and_field_never_by_content(
    table_env: Table, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a CSV file with rows whose settings are wrong, each carrying the marker somewhere
    source = tmp_path / "docs.csv"
    rows = [
        ["text", "target_language", "max_tokens", "temperature", "task"],
        ["Hello there.", "French", "8", "", ""],
        [f"=1+2 {MARKER}", "French", f"=1+{MARKER}", "", ""],
        [f"@{MARKER}", "French", "8", f"-{MARKER}", ""],
        ["Good night.", f'=HYPERLINK("{MARKER}")', "8", "", ""],
        ["Good morning.", "French", "8", "", f"+{MARKER}"],
        [MARKER * 15000, "French", "8", "", ""],
    ]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    source.write_text(buffer.getvalue(), encoding="utf-8")

    # WHEN it is enqueued
    code, output = _enqueue(source, table_env, capsys, caplog, "--task", "translate")

    # THEN every bad row is named by its line and field, and the marker is nowhere
    reported = _reported(output)
    assert code == 1
    assert reported[3] == "max_tokens: not a number (expected an integer)"
    assert reported[4] == "temperature: not a number (expected a number)"
    assert reported[5].startswith("target_language: String should match pattern")
    assert reported[6].startswith("task: unknown task; expected one of")
    assert reported[7] == "not readable CSV: field larger than field limit (131072)"
    assert list(reported) == [3, 4, 5, 6, 7]
    assert MARKER not in output
    assert len(table_env.items()) == 1


# -- (b) one unreadable line never stops the others -------------------------------------------------


def test_a_jsonl_line_that_is_not_utf8_is_reported_and_every_other_line_is_queued(
    table_env: Table, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a JSONL file whose second line has a byte that is not UTF-8 (Latin-1 "é") among good lines
    good = [json.dumps(_valid(f"Document {n} about boosting.")).encode() for n in range(3)]
    bad = b'{"task": "summarize", "text": "caf\xe9 ' + MARKER.encode() + b'"}'
    source = tmp_path / "requests.jsonl"
    source.write_bytes(b"\n".join([good[0], bad, good[1], good[2]]) + b"\n")

    # WHEN it is enqueued
    code, output = _enqueue(source, table_env, capsys, caplog)

    # THEN line 2 is reported as not UTF-8 with the byte's offset, and the three others are queued
    assert code == 1
    offset = bad.index(b"\xe9")
    assert _reported(output) == {2: f"not valid UTF-8 (invalid byte at offset {offset} of the line)"}
    assert "new: 3" in output
    assert MARKER not in output
    assert len(table_env.items()) == 3


def test_a_csv_record_that_is_not_utf8_is_reported_and_every_other_record_is_queued(
    table_env: Table, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a CSV file with a bad byte in one record, and in the second line of a quoted two-line record
    source = tmp_path / "docs.csv"
    source.write_bytes(
        b"text,max_tokens\n"
        b"Hello there.,8\n"
        b"Caf\xe9 " + MARKER.encode() + b",8\n"
        b'"First line\nsecond line with \xff ' + MARKER.encode() + b'",8\n'
        b"Good night.,8\n"
    )

    # WHEN it is enqueued
    code, output = _enqueue(source, table_env, capsys, caplog)

    # THEN both bad records are named by the line they start on, and the good ones are queued
    assert code == 1
    assert _reported(output) == {
        3: "not valid UTF-8 (invalid byte at offset 3 of the line)",
        4: "its line 5 is not valid UTF-8 (invalid byte at offset 17 of the line)",
    }
    assert MARKER not in output
    assert sorted(item["request"]["text"] for item in table_env.items()) == ["Good night.", "Hello there."]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_byte_order_mark_and_crlf_line_ends_are_read(
    suffix: str,
    table_env: Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a file as Windows tools save it: a UTF-8 byte order mark and CRLF line ends
    texts = ["Première ligne.", "Second document.", "Third one."]
    if suffix == ".jsonl":
        lines = [json.dumps(_valid(text), ensure_ascii=False) for text in texts]
    else:
        lines = ["text,max_tokens", *(f"{text},8" for text in texts)]
    source = tmp_path / f"windows{suffix}"
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")

    # WHEN it is enqueued
    code, output = _enqueue(source, table_env, capsys, caplog)

    # THEN every line is queued, with its text as written (no BOM, no carriage return)
    assert code == 0, output
    assert sorted(item["request"]["text"] for item in table_env.items()) == sorted(texts)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (b'{"task": "summarize", "text": "lone \\ud800 surrogate"}', "has a \\u escape of an unpaired UTF-16"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON this script reads: nested too deeply"),
        (b'{"task": "summarize", "text": "x", "options": {"seed": 1' + b"0" * 5000 + b"}}", "not JSON this script"),
    ],
    ids=["lone-surrogate", "deep-nesting", "huge-number"],
)
def test_a_jsonl_line_python_cannot_take_is_reported_and_the_others_are_queued(
    bad_line: bytes,
    expected: str,
    table_env: Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_bytes(b"\n".join([json.dumps(_valid()).encode(), bad_line, json.dumps(_valid("Other.")).encode()]))

    code, output = _enqueue(source, table_env, capsys, caplog)

    assert code == 1
    assert list(_reported(output)) == [2]
    assert _reported(output)[2].startswith(expected), output
    assert len(table_env.items()) == 2


# -- (c) CSV exports hand no spreadsheet a formula; JSONL stays exact -------------------------------

FORMULA_OUTPUTS = [
    '=HYPERLINK("http://example.invalid","click")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+2",
    "\r=1+2",
    "- first point\n- second point",
]
PLAIN_OUTPUTS = ["A plain summary, with a comma.", 'He said "hi".', "3 points"]


def _done_items(table: Table, outputs: list[str]) -> dict[str, str]:
    """DONE items with these outputs (written as a worker writes them); each id to its output."""
    store = ResultStore(table.name)
    model = ModelInfo(file="model.gguf", sha256="0" * 64)
    written: dict[str, str] = {}
    for number, output in enumerate(outputs):
        item_id = f"{number:064x}"
        request = parse_request(_valid(f"Document {number}."))
        metrics = Metrics(
            prompt_tokens=5,
            prompt_eval_tokens=5,
            prompt_ms=-3.0,  # a number column with a negative value: must stay a number
            prompt_tokens_per_s=100.0,
            completion_tokens=4,
            eval_ms=40.0,
            eval_tokens_per_s=100.0,
            total_ms=43.0,
            cold_start=False,
            n_threads=2,
            peak_rss_mb=300.0,
        )
        assert store.items.put_pending(item_id, {"task": request.task, "request": request.model_dump(mode="json")})
        assert store.leases.claim_queued(item_id, "test-worker", 60.0) is not None
        assert store.leases.complete(
            item_id, "test-worker", done_fields(request, output, "stop", metrics, model, prompt_version=PROMPT_VERSION)
        )
        written[item_id] = output
    return written


def test_csv_export_prefixes_formula_cells_with_a_quote_and_quotes_every_text_cell(
    table_env: Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN finished results whose outputs start with formula characters, and plain ones
    written = _done_items(table_env, FORMULA_OUTPUTS + PLAIN_OUTPUTS)
    out = tmp_path / "results.csv"

    # WHEN they are exported as CSV
    assert export_results.main(["--table", table_env.name, "--out", str(out)]) == 0
    capsys.readouterr()

    # THEN a formula-starting output reads back with one "'" before it, a plain one as it was
    with out.open(encoding="utf-8", newline="") as handle:
        text = handle.read()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(written)
    exported = {row["id"]: row["output"] for row in rows}
    for item_id, output in written.items():
        cell = "'" + output if output in FORMULA_OUTPUTS else output
        assert exported[item_id] == cell
        # AND every text cell is quoted in the file
        assert '"' + cell.replace('"', '""') + '"' in text
        assert f'"{item_id}","summarize",' in text
    # AND a number column keeps its numbers as numbers, negative ones too (not quoted, no prefix)
    assert all(row["prompt_ms"] == "-3.0" for row in rows)
    assert text.count(",-3.0,") == len(written)


def test_jsonl_export_keeps_every_output_exactly(
    table_env: Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _done_items(table_env, FORMULA_OUTPUTS + PLAIN_OUTPUTS)
    out = tmp_path / "results.jsonl"

    assert export_results.main(["--table", table_env.name, "--out", str(out)]) == 0
    capsys.readouterr()

    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {item["id"]: item["output"] for item in exported} == written
    assert all(item["metrics"]["prompt_ms"] == -3.0 for item in exported)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("", ""),
        (" =1+2", " =1+2"),
        (-3, -3),
        (-3.5, -3.5),
        (True, True),
        (None, None),
    ],
)
def test_spreadsheet_cell_quotes_only_text_that_starts_with_a_formula_character(value: Any, cell: Any) -> None:
    assert export_results.spreadsheet_cell(value) == cell


# -- counted before queued ---------------------------------------------------------------------------


def test_given_the_model_file_a_line_over_the_context_window_is_reported_and_not_queued(
    table_env: Table,
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a good line and one far over the model's 4,096-token window
    overlong = " ".join(f"{MARKER}-{n}" for n in range(3000))
    source = tmp_path / "requests.jsonl"
    single = {**_valid(overlong), "strategy": "single"}  # auto would answer it chunk by chunk
    source.write_text(f"{json.dumps(_valid())}\n{json.dumps(single)}\n", encoding="utf-8")

    # WHEN it is enqueued for the model file itself
    code = enqueue_script.main([str(source), "--table", table_env.name, "--model", str(tiny_model)])
    printed = capsys.readouterr()
    output = printed.out + printed.err

    # THEN line 2 is reported with its token count, the window and no text, and line 1 is queued
    assert code == 1
    assert "do not fit the context window of 4096" in _reported(output)[2]
    assert "new: 1" in output
    assert MARKER not in output
    assert len(table_env.items()) == 1
