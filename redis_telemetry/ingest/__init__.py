"""Turn agent CLI output into completion events and limits, and record them.

Formats (one parser module each; docs/ingest.md has their field mappings):

- ``claude``: ``claude -p --output-format stream-json --verbose`` (:mod:`.claude`)
- ``opencode``: ``opencode run --format json`` (:mod:`.opencode`)
- ``pi``: ``pi --mode json`` (:mod:`.pi`)
- ``codex``: ``codex exec --json`` (:mod:`.codex`)
- ``gemini``: ``gemini --output-format stream-json`` or ``--output-format json`` (:mod:`.gemini`)
- ``jsonl``: one ``CompletionEvent`` per line, in serde JSON (:mod:`.jsonl`)

A format whose output is concatenated JSON objects over many lines (gemini's json) is read as
a stream of objects (``Parser.read``), each numbered by its first line.

For Python orchestrators: :func:`parse_lines` (pure) and :func:`ingest_lines` /
:func:`ingest_file` (record into a store), the same code the ``ingest`` command runs;
:func:`aingest_lines` / :func:`arun_ingest` do the same on an ``AsyncTelemetryStore``.
"""

from __future__ import annotations

from .claude import ClaudeParser
from .codex import CodexParser
from .events import Completion, Item, Limit, Parser, Read, UnparseableLine, breakdown
from .formats import FORMAT_NAMES, FORMATS, Parsed, make_parser, parse_lines
from .gemini import GeminiParser
from .jsonl import JsonlParser
from .opencode import OpencodeParser
from .pi import PiParser
from .run import (
    IngestAborted,
    IngestReport,
    aingest_lines,
    apply_limit,
    arun_ingest,
    ingest_file,
    ingest_lines,
    run_ingest,
)

__all__ = [
    "FORMATS",
    "FORMAT_NAMES",
    "ClaudeParser",
    "CodexParser",
    "Completion",
    "GeminiParser",
    "IngestAborted",
    "IngestReport",
    "Item",
    "JsonlParser",
    "Limit",
    "OpencodeParser",
    "Parsed",
    "Parser",
    "PiParser",
    "Read",
    "UnparseableLine",
    "aingest_lines",
    "apply_limit",
    "arun_ingest",
    "breakdown",
    "ingest_file",
    "ingest_lines",
    "make_parser",
    "parse_lines",
    "run_ingest",
]
