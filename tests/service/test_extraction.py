"""Extraction rules: CSS and XPath, lists, nested objects, attributes, CSV shaping."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from svc_site import _products_page

from common.extraction import ExtractionRules, csv_columns, csv_rows, csv_text, extract, item_count

PAGE = _products_page()


def rules(value: object) -> ExtractionRules:
    return ExtractionRules.model_validate(value)


def test_css_xpath_lists_and_nested_objects() -> None:
    r = rules(
        {
            "title": "h1::text",
            "heading_xpath": {"selector": "//h1/text()", "type": "xpath"},
            "count": {"selector": "count(//li[@class='product'])", "type": "xpath"},
            "skus": {"selector": "li.product", "attr": "data-sku", "many": True},
            "products": {
                "selector": "li.product",
                "many": True,
                "fields": {
                    "name": ".name",
                    "price": {"selector": "span[@class='price']/text()", "type": "xpath"},
                    "link": {"selector": "a::attr(href)", "absolute": True},
                },
            },
            "missing": ".nothing",
            "missing_list": {"selector": ".nothing", "many": True},
        }
    )
    data = extract(PAGE, "http://shop.test/products", r)
    assert data["title"] == "Products" and data["heading_xpath"] == "Products"
    assert data["count"] == 20.0
    assert data["skus"][:2] == ["SKU-001", "SKU-002"]
    assert data["products"][0] == {"name": "Product 1", "price": "$1.99", "link": "http://shop.test/products/1"}
    assert len(data["products"]) == 20
    assert data["missing"] is None and data["missing_list"] == []


def test_text_is_whitespace_normalised_and_html_kept_on_request() -> None:
    html = "<div class=a>\n  Hello\n  <b>big</b>   world </div>"
    data = extract(html, "http://x/", rules({"text": ".a", "html": {"selector": ".a b", "attr": "html"}}))
    assert data == {"text": "Hello big world", "html": "<b>big</b>"}


@pytest.mark.parametrize(
    ("value", "loc", "needle"),
    [
        ({"a": "h1["}, ("a", "selector"), "invalid CSS selector 'h1['"),
        ({"a": {"selector": "//h1[", "type": "xpath"}}, ("a", "rule", "selector"), "invalid XPath selector '//h1['"),
        ({"a": {"selector": "li", "fields": {"q": "p::foo"}}}, ("a", "rule", "fields", "q", "selector"), "::foo"),
        ({"a": {"selector": "nosuchfn(//a)", "type": "xpath"}}, ("a", "rule", "selector"), "nosuchfn"),
        ({}, (), "at least 1 item"),
        ({"1bad": "p"}, ("1bad", "[key]"), "pattern"),
        ({"a": {"selector": "p", "attr": "href", "fields": {"x": "b"}}}, ("a", "rule"), "exclusive"),
    ],
)
def test_bad_rules_name_the_field_and_selector(value: object, loc: tuple[str, ...], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        rules(value)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    assert tuple(errors[0]["loc"]) == loc
    assert needle in errors[0]["msg"]


def test_csv_explodes_the_single_list_field() -> None:
    r = rules({"title": "h1", "products": {"selector": "li.product", "many": True, "fields": {"name": ".name"}}})
    data = extract(PAGE, "http://shop.test/products", r)
    assert item_count(data, r) == 20
    columns = csv_columns(r)
    assert columns[-2:] == ["title", "products.name"]
    rows = list(csv_rows({"url": "u", "state": "succeeded", "data": data}, r))
    assert len(rows) == 20 and rows[0][-2:] == ["Products", "Product 1"]
    failed = list(csv_rows({"url": "u2", "state": "failed", "error": "HTTP 500", "data": None}, r))
    assert failed == [["u2", "", "", "failed", "HTTP 500", "", ""]]
    assert csv_text([columns]).startswith("url,final_url,status_code,state,error,title,products.name")


def test_csv_keeps_one_row_per_page_with_several_lists() -> None:
    r = rules({"a": {"selector": "li", "many": True}, "b": {"selector": "li", "many": True}})
    data = extract("<li>1</li><li>2</li>", "http://x/", r)
    rows = list(csv_rows({"url": "u", "state": "succeeded", "data": data}, r))
    assert len(rows) == 1 and rows[0][-2:] == ['["1", "2"]', '["1", "2"]']


def test_prepared_rules_give_the_same_data_without_validating_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    import common.extraction as extraction

    r = rules(
        {
            "title": "h1::text",
            "products": {
                "selector": "li.product",
                "many": True,
                "fields": {"name": ".name::text", "link": {"selector": "a::attr(href)", "absolute": True}},
            },
        }
    )
    expected = extract(PAGE, "http://shop.test/products", r)
    rows = item_count(expected, r)
    prepared = extraction.PreparedRules(r)
    assert prepared.explode == "products"
    assert all(isinstance(rule, extraction.FieldRule) for _d, _n, rule in extraction.walk(prepared.fields))

    def no_validation(*args: object) -> None:
        raise AssertionError("a selector was validated while extracting a page")

    monkeypatch.setattr(extraction, "check_selector", no_validation)
    for _ in range(3):
        assert extract(PAGE, "http://shop.test/products", prepared) == expected
    assert item_count(expected, prepared) == rows == 20
