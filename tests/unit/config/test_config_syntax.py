"""main.cf syntax: logical lines, lists with braces, $name expansion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.config.syntax import BraceError, expand, parse_main_cf, references, words


def _parse(text: str):  # type: ignore[no-untyped-def]
    return parse_main_cf(text, "main.cf", is_list=lambda n: n.endswith("restrictions"))


def test_continuation_comments_and_blank_lines() -> None:
    entries, diags = _parse(
        "# comment\n"
        "a = one,\n"
        "    two\n"
        "\n"
        "  # indented comment does not end the line\n"
        "\tthree\n"
        "b=x # not a comment: Postfix has whole-line comments only\n"
    )
    assert diags == []
    assert [(e.name, e.value, e.line) for e in entries] == [
        ("a", "one, two three", 2),
        ("b", "x # not a comment: Postfix has whole-line comments only", 7),
    ]


def test_missing_equals_is_an_error_with_line() -> None:
    _, diags = _parse("a = b\nhello world there\n")
    assert [(d.severity, d.line) for d in diags] == [("error", 2)]
    assert "missing '='" in diags[0].message


def test_leading_whitespace_first_line_is_an_error() -> None:
    _, diags = _parse("  a = b\n")
    assert diags[0].severity == "error" and diags[0].line == 1


def test_seed_quirk_only_for_list_parameters() -> None:
    entries, diags = _parse("x_restrictions =\npermit_mynetworks,\n# c\nreject_rbl_client z.org,\n")
    assert entries[0].value == "permit_mynetworks, reject_rbl_client z.org,"
    assert [d.line for d in diags] == [2, 4]
    assert all(
        d.severity == "warning" and "indent this line with a space" in d.message for d in diags
    )


def test_words_commas_whitespace_and_braces() -> None:
    assert words("a, b  c,,d\n e") == ("a", "b", "c", "d", "e")
    assert words("inline:{ a=b, c=d }, static:x") == ("inline:{ a=b, c=d }", "static:x")
    assert words("{ reject_rbl_client x }, permit") == ("{ reject_rbl_client x }", "permit")
    with pytest.raises(BraceError):
        words("inline:{ a=b")
    with pytest.raises(BraceError):
        words("a }")


def _resolver(values: dict[str, str]):  # type: ignore[no-untyped-def]
    def resolve(name: str) -> str | None:
        v = values.get(name)
        return None if v is None else expand(v, resolve)

    return resolve


def test_expansion_forms() -> None:
    r = _resolver({"a": "A", "b": "$a-${a}-$(a)", "empty": ""})
    assert expand("x $b y", r) == "x A-A-A y"
    assert expand("$undefined.", r) == "."
    assert expand("cost $$5", r) == "cost $5"
    assert expand("${a?set}|${empty?set}|${a:unset}|${empty:unset}|${nope:dflt}", r) == (
        "set||A|unset|dflt"
    )
    assert expand("${a?{yes}:{no}} ${empty?{yes}:{no}}", r) == "yes no"
    assert expand("trailing $", r) == "trailing $"


def test_references() -> None:
    assert references("$a ${b} $(c) ${d?x} $$e") == {"a", "b", "c", "d"}


_item = st.from_regex(r"[a-z0-9_:./\[\]-]{1,12}", fullmatch=True)


@given(st.lists(_item, max_size=8), st.sampled_from([", ", " ", ",", " ,\n ", "\t"]))
def test_words_roundtrip(items: list[str], sep: str) -> None:
    assert words(sep.join(items)) == tuple(items)


@given(st.text(max_size=60))
def test_expand_never_raises(text: str) -> None:
    expand(text, lambda n: "v" if n == "x" else None)


@given(st.text(max_size=200))
def test_parse_main_cf_never_raises(text: str) -> None:
    _parse(text)
