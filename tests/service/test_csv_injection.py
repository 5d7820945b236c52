"""CSV downloads open in spreadsheets: a scraped text cell that starts like a formula is
written with a leading apostrophe (OWASP "CSV Injection"), so it shows as text instead of
being evaluated."""

from __future__ import annotations

import csv
import io

import pytest

from common.extraction import ExtractionRules, csv_rows, csv_text


@pytest.mark.parametrize(
    "text",
    ['=HYPERLINK("http://evil.test","x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"],
)
def test_formula_like_text_is_escaped(text: str) -> None:
    rules = ExtractionRules.model_validate({"title": "h1::text"})
    page = {"url": "http://shop.test/", "state": "failed", "error": text, "data": {"title": text}}
    (row,) = list(csv_rows(page, rules))
    assert row[-1] == "'" + text and row[4] == "'" + text  # data and meta cells alike
    parsed = next(csv.reader(io.StringIO(csv_text([row]))))
    assert parsed[-1] == "'" + text  # the quote survives the CSV round trip


def test_ordinary_cells_and_numbers_are_unchanged() -> None:
    rules = ExtractionRules.model_validate({"title": "h1::text", "count": "span", "tags": "li"})
    data = {"title": "Price: -5 € = cheap", "count": -5, "tags": ["=a", "b"]}
    (row,) = list(csv_rows({"url": "u", "state": "succeeded", "status_code": 200, "data": data}, rules))
    assert row == ["u", "", "200", "succeeded", "", "Price: -5 € = cheap", "-5", '["=a", "b"]']
