"""Concatenated JSON objects read as a stream (``ObjectStream``, ``Parser.read``): how a log of
pretty-printed objects, captured with ``2>&1``, is cut into objects and what a broken one
costs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from redis_telemetry.ingest import make_parser, parse_lines
from redis_telemetry.ingest.events import ObjectStream


def objects_of(lines: list[str], max_chars: int | None = None) -> list[tuple[int, list[str]]]:
    """Each group the stream hands out: its line number and its texts."""
    stream = ObjectStream() if max_chars is None else ObjectStream(max_chars)
    groups = [g for n, line in enumerate(lines, 1) for g in stream.push(n, line)]
    groups += stream.end()
    return [(g[0].lineno, [f.text for f in g]) for g in groups]


def pretty(obj: dict[str, Any]) -> list[str]:
    """``JSON.stringify(obj, null, 2)`` as lines, without the last newline."""
    return json.dumps(obj, indent=2).split("\n")


def test_pretty_objects_back_to_back() -> None:
    a, b, c = {"a": 1, "n": {"x": [1, {"y": 2}]}}, {"b": "}{"}, {"c": []}
    lines = pretty(a)  # printed without a newline; the next begins on its last line
    lines[-1] += pretty(b)[0]
    lines += pretty(b)[1:] + pretty(c)
    got = objects_of([line + "\n" for line in lines])
    assert [json.loads(texts[0]) for _, texts in got] == [a, b, c]
    assert [n for n, _ in got] == [1, 11, 14]  # each numbered by its first line


def test_one_object_a_line_and_strings_with_braces_and_quotes() -> None:
    lines = ['{"type":"init","text":"a } and a \\" and a {"}\n', '{"type":"result"}\n']
    assert objects_of(lines) == [(1, [lines[0].strip()]), (2, [lines[1].strip()])]


def test_text_outside_an_object_is_a_line_of_its_own() -> None:
    lines = ["Loaded cached credentials.\n", "   \n", '  {"indented": 1}\n', "{}\n"]
    assert objects_of(lines) == [
        (1, ["Loaded cached credentials.\n"]),
        (3, ['  {"indented": 1}\n']),  # no object begins indented: text
        (4, ["{}"]),
    ]


def test_text_after_an_object_on_its_line_belongs_to_it() -> None:
    assert objects_of(['{"a": 1} trailing\n']) == [(1, ['{"a": 1} trailing\n'])]
    assert objects_of(['{"a": 1} {"b": 2}\n']) == [(1, ['{"a": 1}', '{"b": 2}'])]


def test_an_object_waits_for_the_one_that_began_on_its_line() -> None:
    """The objects that begin on one line are handed out together, once the last is whole."""
    stream = ObjectStream()
    assert stream.push(1, '{"a": 1}{\n') == []
    assert stream.push(2, '  "b": 2\n') == []
    (group,) = stream.push(3, "}\n")
    assert [(f.lineno, f.text) for f in group] == [(1, '{"a": 1}'), (1, '{\n  "b": 2\n}')]


def test_an_object_cut_off_by_the_next_is_handed_out_unclosed() -> None:
    lines = ["{\n", '  "a": {\n', "{}\n"]
    assert objects_of(lines) == [(1, ['{\n  "a": {\n']), (3, ["{}"])]
    assert objects_of(["{\n", '  "a": 1\n']) == [(1, ['{\n  "a": 1\n'])]  # at the end


def test_an_object_past_the_size_bound_is_cut() -> None:
    lines = ["{\n", '  "a": "' + "x" * 60 + '",\n', '  "b": 1\n', "}\n"]
    got = objects_of(lines, max_chars=50)
    assert got[0] == (1, ["{\n" + lines[1]])
    assert got[1:] == [(3, [lines[2]]), (4, [lines[3]])]  # the rest, outside any object


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def run(lines: list[str]) -> Any:
    return parse_lines("gemini", lines, model="m", clock=lambda: NOW)


FAILURE = {"session_id": "s", "error": {"type": "Error", "message": "boom", "code": 500}}


def test_a_broken_object_is_blamed_on_its_first_line_and_the_rest_read_again() -> None:
    """A run killed mid-print leaves half an object; the next run's object begins at the start
    of a line. The half is blamed on its first line; its other lines are read again, as if
    that line were not there (so each is reported, and none is lost)."""
    half = pretty({"session_id": "s1", "stats": {"models": {}}})[:3]
    lines = [line + "\n" for line in half + pretty(FAILURE)]
    p = run(lines)
    assert p.unparseable == [
        (1, "not JSON: an object cut off before its end"),
        (2, "not JSON: Extra data"),  # '  "session_id": "s1",'
        (3, "not JSON: Extra data"),  # '  "stats": {'
    ]
    assert [(e.session_id, e.success) for e in p.events] == [("s", False)]
    # without the lines blamed, the same events
    assert run(lines[3:]).events == p.events


def test_a_garbled_object_is_blamed_the_same_way() -> None:
    lines = ["{\n", '  "session_id": "s",,\n', '  "error": {"type": "Error"}\n', "}\n"]
    p = run(lines)
    assert p.unparseable[0] == (1, "not JSON: a broken object")
    assert {n for n, _ in p.unparseable} == {1, 2, 3, 4}
    assert p.events == []


def test_objects_that_begin_on_one_line_count_together() -> None:
    """Two objects on one line are one line of the input: if one is unparseable, neither
    counts, as a JSON array of messages is one line."""
    good = json.dumps(FAILURE)
    bad = json.dumps({"session_id": "s", "error": {"type": "Error"}, "stats": []})
    p = run([good + bad + "\n"])
    assert (p.events, p.unparseable) == ([], [(1, "stats is not a JSON object")])
    p = run([good + " " + good + "\n"])
    assert [e.success for e in p.events] == [False, False]
    assert len({e.event_id for e in p.events}) == 2


def test_a_parser_is_fed_whole_objects() -> None:
    parser = make_parser("gemini", model="m")
    (event,) = parser.feed("\n".join(pretty(FAILURE)))
    assert event.event.error == "boom"  # type: ignore[union-attr]


# -- any objects, any way they are printed --------------------------------------------------------

keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(st.sampled_from('{}[]"\\ ab\t\u00e9'), max_size=8),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=10,
)
printed = st.tuples(st.dictionaries(keys, json_values, max_size=4), st.booleans(), st.booleans())
noise = st.text(st.characters(blacklist_characters="{\n\r", codec="utf-8"), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(printed, noise), max_size=8))
def test_every_object_printed_is_read_back(items: list[Any]) -> None:
    """Objects pretty-printed or on one line, printed back to back (``}{``) or each ending its
    line, with lines of other text between them: each object comes back whole, in order."""
    text, expected = "", []
    for item in items:
        if isinstance(item, str):  # a line of stderr: it begins a line of its own
            text += ("" if text.endswith("\n") or not text else "\n") + item + "\n"
            continue
        obj, indented, newline = item
        expected.append(obj)
        text += json.dumps(obj, indent=2 if indented else None) + ("\n" if newline else "")
    lines = text.splitlines(keepends=True)
    got = [json.loads(t) for _, texts in objects_of(lines) for t in texts if t.startswith("{")]
    assert got == expected
