"""What a selector or a page may cost (issue 17, items 3 and 6): selectors are checked at
submission without being run, regular-expression (and other EXSLT) functions are refused with
a 422 naming the field, and extraction runs in helper processes with a time, CPU, memory and
output budget per page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from pydantic import ValidationError
from svc_helpers import REPO, Account
from svc_site import _products_page

from common.extraction import ExtractionRules, ResultTooLarge, check_selector, extract, xpath_problem
from worker.extractor import ExtractionFailed, ExtractorPool

PAGE = _products_page()
# exponential backtracking in Python's re: ~2^n steps for n letters
EVIL_REGEX = {"x": {"type": "xpath", "selector": "re:test('" + "a" * 24 + "!', '(a+)+$')"}}
# nested predicates: a few dozen elements are enough for this to run for hours
NESTED = "//*" + "[count(ancestor-or-self::*/descendant-or-self::*" * 14 + ") > 0]" * 14
# cubic in the depth of a page: fast on ordinary pages, minutes on 1000 nested elements
QUADRATIC = "count(//*[count(ancestor-or-self::*/descendant-or-self::*) > 0])"


def deep_page(depth: int, text: str = "") -> str:
    return ("<div>" + text) * depth + "</div>" * depth


def validate_elsewhere(rules: Any, timeout: float = 20) -> tuple[float, list[dict[str, Any]]]:
    """Validate rules in a fresh interpreter (a selector that hangs must fail the test, not
    freeze it): (seconds taken, pydantic's errors)."""
    code = (
        "import json, sys, time\n"
        "from pydantic import ValidationError\n"
        "from common.extraction import ExtractionRules\n"
        "rules = json.loads(sys.stdin.read())\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    ExtractionRules.model_validate(rules); errors = []\n"
        "except ValidationError as exc:\n"
        "    errors = json.loads(exc.json(include_url=False))\n"
        "print(json.dumps([time.monotonic() - started, errors]))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(rules),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"validating the rules took more than {timeout}s: the selector was run")
    seconds, errors = json.loads(done.stdout)
    return seconds, errors


# --- at submission ----------------------------------------------------------------------


def test_regex_functions_are_refused_quickly_naming_the_field() -> None:
    seconds, errors = validate_elsewhere(EVIL_REGEX)
    assert seconds < 1.0
    assert len(errors) == 1 and tuple(errors[0]["loc"]) == ("x", "rule", "selector")
    assert "regular-expression functions such as re:test() are not supported" in errors[0]["msg"]
    assert "contains()" in errors[0]["msg"]  # says what to use instead


@pytest.mark.parametrize(
    ("selector", "needle"),
    [
        ("//li[re:match(@class, '(a|aa)+$')]", "re:match() are not supported"),
        ("re:replace(//h1, 'a', 'g', 'b')", "re:replace() are not supported"),
        ("re:test (//h1, 'a')", "re:test() are not supported"),  # whitespace before '(' is allowed
        ("set:distinct(//li)", "extension function set:distinct() is not supported"),
        ("str:tokenize('a b')", "extension function str:tokenize() is not supported"),
        ("//a[$href]", "variables ($href) are not supported"),
        ("//svg:rect", "namespace prefix 'svg' is not defined"),
        ("substring('abc')", "substring() takes 2 to 3 argument(s), got 1"),
        ("concat('a')", "concat() takes at least 2 argument(s), got 1"),
    ],
)
def test_extension_functions_and_unusable_xpath_are_refused(selector: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExtractionRules.model_validate({"f": {"type": "xpath", "selector": selector}})
    assert needle in info.value.errors()[0]["msg"]


def test_the_regex_namespace_is_not_mapped_when_pages_are_extracted() -> None:
    """Belt and braces: a rule that got past the check (stored before it) cannot reach re:."""
    rules = ExtractionRules.stored({"x": {"type": "xpath", "selector": "re:test(//h1, 'P')"}})
    with pytest.raises(ValueError, match="Undefined namespace prefix"):
        extract(PAGE, "http://shop.test/", rules)


def test_selectors_are_not_run_at_submission() -> None:
    seconds, errors = validate_elsewhere({"x": {"type": "xpath", "selector": NESTED}})
    assert errors == [] and seconds < 1.0


def test_ordinary_selectors_still_pass() -> None:
    xpaths = [
        "//div[@class='a' and @id]/text()",
        "count(//a) * 2",
        "1 div 2",
        "//a[position() mod 2 = 0]/@href",
        "//*[@xml:lang]",
        "(//a)[last()]",
        "//p[has-class('x')]",
        "//processing-instruction('x') | //comment()",
        "//div/and/or",  # element names that read like operators
        "//a[* * 2]",
        "normalize-space(substring-after(//h1, ':'))",
        'translate(//a, "ABC", "abc")',
    ]
    css = ["li.product", "a::attr(href)", "h1::text", "div:not(.a) > p:nth-child(2n+1)", "a[href^='#']"]
    css += ["p:lang(en)", "input:checked", "p:empty", "a[href*=x i]", "div:has(> p.x)", "p:contains('x')"]
    for selector in xpaths:
        check_selector(selector, "xpath")
    for selector in css:
        check_selector(selector, "css")
    assert xpath_problem("re:test(., 'a')") is not None


def test_the_api_answers_422_quickly(client: Any, account: Account) -> None:
    started = time.monotonic()
    response = client.post(
        "/api/v1/tasks",
        json={"urls": ["https://example.com/"], "extract": EVIL_REGEX},
        headers=account.headers,
    )
    assert time.monotonic() - started < 2.0
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"][:3] == ["body", "extract", "x"]
    assert "regular-expression functions" in detail[0]["msg"]


# --- per page, in the worker ---------------------------------------------------------------


def test_output_is_counted_while_it_is_built() -> None:
    rules = ExtractionRules.model_validate({"d": {"selector": "div", "many": True}})
    page = deep_page(800, "x" * 100)  # each div's text holds its descendants': ~32 MB in all
    started = time.monotonic()
    with pytest.raises(ResultTooLarge, match="larger than the 100000 bytes"):
        extract(page, "http://x/", rules, max_chars=100_000)
    assert time.monotonic() - started < 1.0


@pytest.fixture(scope="module")
def pool() -> Any:
    helpers = ExtractorPool(size=1, seconds=2.0, memory_bytes=1024 * 1024 * 1024)
    yield helpers
    helpers.close()


def rules_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_pool_extracts_and_serialises(pool: ExtractorPool) -> None:
    rules = {"title": "h1::text", "items": {"selector": "li.product", "many": True, "fields": {"n": ".name::text"}}}
    result = pool.extract(rules_json(rules), PAGE, "http://shop.test/", 1 << 20)
    assert result.item_count == 20
    assert json.loads(result.data) == extract(PAGE, "http://shop.test/", ExtractionRules.model_validate(rules))


def test_a_page_over_its_time_budget_fails_and_the_next_page_works(pool: ExtractorPool) -> None:
    started = time.monotonic()
    with pytest.raises(ExtractionFailed) as info:
        pool.extract(rules_json({"x": {"type": "xpath", "selector": QUADRATIC}}), deep_page(1000), "http://x/", 1 << 20)
    assert info.value.code == "extraction_timeout"
    assert time.monotonic() - started < 3.5
    # the helper was replaced; the same rules on an ordinary page are fine
    ok = pool.extract(rules_json({"x": {"type": "xpath", "selector": QUADRATIC}}), PAGE, "http://x/", 1 << 20)
    assert json.loads(ok.data) == {"x": 86.0}


def test_oversized_output_fails_with_result_too_large(pool: ExtractorPool) -> None:
    with pytest.raises(ExtractionFailed) as info:
        pool.extract(rules_json({"d": {"selector": "div", "many": True}}), deep_page(800, "x" * 100), "u", 100_000)
    assert info.value.code == "result_too_large"


def test_a_page_over_the_memory_limit_fails_cleanly() -> None:
    small = ExtractorPool(size=1, seconds=30.0, memory_bytes=150 * 1024 * 1024)
    page = "<html><body>" + "<p>a</p>" * 300_000 + "</body></html>"  # 2.4 MB, 300k elements
    try:
        with pytest.raises(ExtractionFailed) as info:
            small.extract(rules_json({"p": {"selector": "p", "many": True}}), page, "u", 1 << 30)
        assert info.value.code == "extraction_error"
        assert small.extract(rules_json({"t": "p::text"}), "<p>fine</p>", "u", 1 << 20).data == b'{"t": "fine"}'
    finally:
        small.close()


def test_the_helper_stops_itself_at_its_cpu_budget() -> None:
    """The kernel's CPU limit ends a helper even when nobody waits for it (its worker died)."""
    code = (
        "import sys, io, pickle, struct\n"
        "from worker import extractor\n"
        f"request = pickle.dumps(({rules_json({'x': {'type': 'xpath', 'selector': QUADRATIC}})!r}, "
        "'<div>' * 1000 + '</div>' * 1000, 'u', 1 << 20, 1.0))\n"
        "extractor.serve(io.BytesIO(struct.pack('!Q', len(request)) + request), sys.stdout.buffer)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=30, check=False)
    assert done.returncode < 0 and time.monotonic() - started < 10, done  # SIGXCPU
