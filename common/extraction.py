"""Extraction rules (user-supplied CSS/XPath selectors) and the code that applies them.

The rule models are the API's request schema, so a bad selector is rejected when the
task is submitted, with the field path and the selector in the message; the worker
applies the very same models to fetched pages with parsel (lxml + cssselect).

Selectors are checked without running them (a selector's cost on a page can be exponential,
so running one in the API would let a request freeze it): CSS is translated to XPath, the
XPath is compiled, and its function calls are read from its tokens. Only XPath 1.0 functions
(and parsel's ``has-class``) exist here: the EXSLT namespaces parsel maps by default (``re:``
regular expressions, whose backtracking can take exponential time, and ``set:``) are not
mapped. Pages are extracted in the worker's helper processes, which bound time and memory.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

from lxml import etree
from parsel import Selector, SelectorList
from parsel.csstranslator import css2xpath
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
MAX_DEPTH = 4
MAX_FIELDS = 100
_SPACES = re.compile(r"\s+")
# pydantic validation context of rules read back from the database: checked at submit time
STORED = {"stored_rules": True}


class PageSelector(Selector):
    """parsel's Selector without the EXSLT namespaces (``re:``, ``set:``) it maps by default."""

    _default_namespaces: dict[str, str] = {}  # noqa: RUF012 (parsel's class attribute)


# XPath 1.0 core functions (and parsel's has-class) -> (min, max) argument count
FUNCTIONS: dict[str, tuple[int, float]] = {
    **dict.fromkeys(["last", "position", "true", "false"], (0, 0)),
    **dict.fromkeys(["count", "id", "boolean", "not", "lang", "sum", "floor", "ceiling", "round"], (1, 1)),
    **dict.fromkeys(["local-name", "namespace-uri", "name", "string", "string-length", "normalize-space"], (0, 1)),
    **dict.fromkeys(["starts-with", "contains", "substring-before", "substring-after"], (2, 2)),
    "number": (0, 1),
    "concat": (2, float("inf")),
    "substring": (2, 3),
    "translate": (3, 3),
    "has-class": (1, float("inf")),
}
_NODE_TYPES = {"comment", "text", "processing-instruction", "node"}
_OPERATOR_NAMES = {"and", "or", "mod", "div"}
_NCNAME = r"[^\W\d][\w.-]*"
# XPath 1.0 lexical structure (section 3.7); anything else is left to lxml's compiler
_XPATH_TOKEN = re.compile(
    rf"""\s*(?:
      (?P<literal>"[^"]*"|'[^']*')
    | (?P<number>\d+(?:\.\d*)?|\.\d+)
    | (?P<variable>\$\s*{_NCNAME}(?::{_NCNAME})?)
    | (?P<name>{_NCNAME}(?::(?:{_NCNAME}|\*))?)
    | (?P<punct>::|\.\.|//|!=|<=|>=|[()\[\].@,/|+=<>*-])
    )""",
    re.VERBOSE,
)
_CALL = re.compile(r"\s*\(")
# after these tokens a name is a name test or function and '*' a wildcard, not an operator
_OPERAND_FOLLOWS = {None, "@", "::", "(", "[", ",", "/", "//", "|", "+", "-", "=", "!=", "<", "<=", ">", ">="}


def _function_problem(name: str, args: int) -> str | None:
    if ":" in name:
        prefix = name.split(":", 1)[0]
        if prefix == "re":
            return (
                f"regular-expression functions such as {name}() are not supported (a pattern can take "
                "exponential time on a page); use contains(), starts-with(), substring-before()/-after(), "
                "translate() or CSS attribute selectors, and filter the extracted values yourself"
            )
        return f"extension function {name}() is not supported: only XPath 1.0 functions are available"
    if name not in FUNCTIONS:
        return f"unknown XPath function {name}()"
    low, high = FUNCTIONS[name]
    if not low <= args <= high:
        wanted = f"{low}" if low == high else (f"at least {low}" if high == float("inf") else f"{low} to {int(high)}")
        return f"{name}() takes {wanted} argument(s), got {args}"
    return None


def xpath_problem(xpath: str) -> str | None:
    """What makes a compilable XPath unusable here (an unknown or extension function, a
    variable), read from its tokens; None when it is fine. Never evaluates it."""
    prev: str | None = None  # the previous token, operators and punctuation by their text
    stack: list[list[Any]] = []  # open '(' / '[': [function name or None, commas, empty]
    pos = 0
    while pos < len(xpath):
        match = _XPATH_TOKEN.match(xpath, pos)
        if match is None or match.end() == pos:
            break  # trailing whitespace or something lxml accepted that we do not tokenize
        pos = match.end()
        kind, text = match.lastgroup, match.group(match.lastgroup or 0)
        if stack and stack[-1][2] and text != ")":
            stack[-1][2] = False
        if kind == "variable":
            return f"variables ({text.replace(' ', '')}) are not supported"
        if kind == "name":
            operand_expected = prev in _OPERAND_FOLLOWS or prev in _OPERATOR_NAMES or prev == "*op"
            if not operand_expected and text in _OPERATOR_NAMES:
                prev = text
                continue
            call = _CALL.match(xpath, pos)
            if call and text not in _NODE_TYPES:
                pos = call.end()
                stack.append([text, 0, True])
                prev = "("
                continue
            if ":" in text and not text.startswith("xml:"):
                return f"namespace prefix {text.split(':', 1)[0]!r} is not defined (no prefixes are)"
        elif text == "*" and not (prev in _OPERAND_FOLLOWS or prev in _OPERATOR_NAMES or prev == "*op"):
            prev = "*op"  # multiplication
            continue
        elif text in ("(", "["):
            stack.append([None, 0, False])
        elif text == "," and stack:
            stack[-1][1] += 1
        elif text in (")", "]") and stack:
            name, commas, empty = stack.pop()
            if name is not None:
                problem = _function_problem(name, 0 if empty else commas + 1)
                if problem:
                    return problem
        prev = text if kind == "punct" else kind
    return None


def check_selector(selector: str, kind: Literal["css", "xpath"]) -> None:
    """Raise ValueError naming the selector when it does not compile or calls a function
    that is not available; the selector is not run (see the module docstring)."""
    label = "CSS" if kind == "css" else "XPath"
    try:
        xpath = css2xpath(selector) if kind == "css" else selector
        etree.XPath(xpath)
    except Exception as exc:  # cssselect and lxml raise a handful of unrelated types
        reason = str(exc).removeprefix("XPath error: ") or type(exc).__name__
        raise ValueError(f"invalid {label} selector {selector!r}: {reason}") from None
    problem = xpath_problem(xpath)
    if problem:
        raise ValueError(f"invalid {label} selector {selector!r}: {problem}")


def _named_keys(schema: dict[str, Any], *_: Any) -> None:
    """Pydantic renders ``dict[FieldName, X]`` as ``patternProperties``, under which keys
    that do not match are unconstrained; publish what the API enforces instead."""
    for value in list(schema.values()):
        if isinstance(value, dict):
            _named_keys(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _named_keys(item)
    patterns = schema.get("patternProperties")
    if isinstance(patterns, dict) and list(patterns) == [FIELD_NAME]:
        schema.pop("patternProperties")
        schema["propertyNames"] = {"pattern": FIELD_NAME}
        schema["additionalProperties"] = patterns[FIELD_NAME]


def _rule_or_shorthand(value: Any) -> str:
    return "selector" if isinstance(value, str) else "rule"


class FieldRule(BaseModel):
    """How to get one named value out of a page (or out of each element of a list)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_named_keys)

    type: Literal["css", "xpath"] = Field(default="css", description="Selector language")
    selector: str = Field(min_length=1, max_length=2000, examples=["h1::text", "//h1/text()"])
    attr: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[A-Za-z_:][A-Za-z0-9_:.-]*$",
        description="Attribute to read from matched elements; 'html' for outer HTML; default: text",
    )
    many: bool = Field(default=False, description="Return every match as a list instead of the first")
    absolute: bool = Field(default=False, description="Resolve the value as a URL against the page URL")
    fields: dict[FieldName, RuleOrSelector] | None = Field(
        default=None, description="Nested fields evaluated inside each matched element (objects)"
    )

    @field_validator("selector")
    @classmethod
    def _compile(cls, value: str, info: ValidationInfo) -> str:
        if not _stored(info):
            check_selector(value, info.data.get("type", "css"))
        return value

    @model_validator(mode="after")
    def _shape(self) -> FieldRule:
        if self.fields is not None and not self.fields:
            raise ValueError("'fields' must name at least one field")
        if self.fields is not None and self.attr is not None:
            raise ValueError("'attr' and 'fields' are exclusive: nested fields read their own values")
        return self


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored_rules"))


def _css_shorthand(value: str, info: ValidationInfo) -> str:
    if not _stored(info):
        check_selector(value, "css")
    return value


FieldName = Annotated[str, Field(pattern=FIELD_NAME)]
CssShorthand = Annotated[str, Field(min_length=1, max_length=2000, description="A CSS selector")]
RuleOrSelector = Annotated[
    Annotated["FieldRule", Tag("rule")] | Annotated[CssShorthand, AfterValidator(_css_shorthand), Tag("selector")],
    Discriminator(_rule_or_shorthand),
]
FieldRule.model_rebuild()


class ExtractionRules(RootModel[dict[FieldName, RuleOrSelector]]):
    """Field name -> rule; a bare string is a CSS selector. Applied to every page of a task."""

    model_config = ConfigDict(json_schema_extra=_named_keys)

    root: dict[FieldName, RuleOrSelector] = Field(
        min_length=1,
        max_length=MAX_FIELDS,
        examples=[
            {
                "title": "h1::text",
                "products": {
                    "selector": "li.product",
                    "many": True,
                    "fields": {"name": ".name::text", "price": ".price::text"},
                },
            }
        ],
    )

    @model_validator(mode="after")
    def _limits(self) -> ExtractionRules:
        count = 0
        for depth, _name, _rule in walk(self.root):
            count += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"fields nest deeper than {MAX_DEPTH} levels")
        if count > MAX_FIELDS:
            raise ValueError(f"at most {MAX_FIELDS} fields per task, got {count}")
        return self

    @property
    def fields(self) -> dict[str, FieldRule | str]:
        return self.root

    @classmethod
    def stored(cls, value: Any) -> ExtractionRules:
        """Rules read back from a task: they were checked when it was submitted, and rules
        accepted then keep working (or fail per page) even if the checks have grown since."""
        return cls.model_validate(value, context=STORED)


def as_rule(rule: FieldRule | str) -> FieldRule:
    """The rule of a shorthand, which was checked with the rules that hold it."""
    return rule if isinstance(rule, FieldRule) else FieldRule.model_validate({"selector": rule}, context=STORED)


def walk(fields: dict[str, FieldRule | str], depth: int = 1) -> Iterator[tuple[int, str, FieldRule]]:
    for name, raw in fields.items():
        rule = as_rule(raw)
        yield depth, name, rule
        if rule.fields:
            yield from walk(rule.fields, depth + 1)


# --- applying rules ---------------------------------------------------------------------


class ResultTooLarge(ValueError):
    """A page's extracted data is over its size limit (nothing of it is kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the data extracted from this page is larger than the {limit} bytes allowed per page")
        self.limit = limit


class _Output:
    """Counts the characters of the values extracted so far, so an oversized result stops
    early instead of being built whole (nested elements repeat their text: a 200 KB page
    can give 50 MB). Characters never exceed the UTF-8 JSON bytes, so the count is a lower
    bound of the serialised size; the exact check is on the serialised data."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    def add(self, size: int) -> None:
        self.used += size
        if self.limit is not None and self.used > self.limit:
            raise ResultTooLarge(self.limit)


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _value(match: Selector, rule: FieldRule, base_url: str, out: _Output) -> Any:
    root = match.root
    if isinstance(root, bool | int | float):  # XPath functions such as count()
        out.add(8)
        return root
    if isinstance(root, str):  # text nodes and attributes (::text, ::attr(), /@href, text())
        value: str | None = _clean(root)
    elif rule.attr == "html":
        value = match.get()
    elif rule.attr:
        raw = root.get(rule.attr) if hasattr(root, "get") else None
        value = _clean(raw) if raw is not None else None
    else:
        value = _clean(" ".join(match.xpath(".//text()").getall()))
    if value is not None and rule.absolute:
        value = urljoin(base_url, value)
    out.add(len(value) + 3 if value is not None else 4)
    return value


def _select(scope: Selector, rule: FieldRule) -> SelectorList[Selector]:
    return scope.css(rule.selector) if rule.type == "css" else scope.xpath(rule.selector)


def _apply(scope: Selector, rule: FieldRule, base_url: str, out: _Output) -> Any:
    matches = _select(scope, rule)
    if not rule.many:
        matches = matches[:1]
    if rule.fields:
        objects = [_apply_fields(m, rule.fields, base_url, out) for m in matches]
        return objects if rule.many else (objects[0] if objects else None)
    values = [_value(m, rule, base_url, out) for m in matches]
    return values if rule.many else (values[0] if values else None)


def _apply_fields(
    scope: Selector, fields: dict[str, FieldRule] | dict[str, FieldRule | str], base_url: str, out: _Output
) -> dict[str, Any]:
    result = {}
    for name, rule in fields.items():
        out.add(len(name) + 4)
        result[name] = _apply(scope, as_rule(rule), base_url, out)
    return result


class PreparedRules:
    """A task's rules with every shorthand turned into a validated ``FieldRule``, once.

    Build it once per task (``prepare``) and pass it to ``extract``/``item_count`` for each
    page: validating a shorthand compiles its selector, which is too slow per element."""

    __slots__ = ("explode", "fields")

    def __init__(self, rules: ExtractionRules) -> None:
        self.fields: dict[str, FieldRule] = _prepared(rules.fields)
        self.explode: str | None = csv_explode_field(rules)


def _prepared(fields: dict[str, FieldRule | str]) -> dict[str, FieldRule]:
    out: dict[str, FieldRule] = {}
    for name, raw in fields.items():
        rule = as_rule(raw)
        if rule.fields:
            rule = rule.model_copy(update={"fields": _prepared(rule.fields)})
        out[name] = rule
    return out


def prepare(rules: ExtractionRules | PreparedRules) -> PreparedRules:
    return rules if isinstance(rules, PreparedRules) else PreparedRules(rules)


def extract(
    html: str, url: str, rules: ExtractionRules | PreparedRules, max_chars: int | None = None
) -> dict[str, Any]:
    """Apply every rule to a page; missing matches give None (or [] for lists). Raises
    ResultTooLarge once the values pass ``max_chars`` characters."""
    page = PageSelector(text=html, base_url=url)
    return _apply_fields(page, prepare(rules).fields, url, _Output(max_chars))


def item_count(data: dict[str, Any], rules: ExtractionRules | PreparedRules) -> int:
    """Rows this page contributes to the CSV export."""
    explode = rules.explode if isinstance(rules, PreparedRules) else csv_explode_field(rules)
    if explode is None:
        return 1
    return len(data.get(explode) or [])


# --- CSV export -------------------------------------------------------------------------

CSV_META = ["url", "final_url", "status_code", "state", "error"]


def csv_explode_field(rules: ExtractionRules) -> str | None:
    """The one top-level list field whose items become CSV rows, if there is exactly one."""
    lists = [name for name, rule in rules.fields.items() if as_rule(rule).many]
    return lists[0] if len(lists) == 1 else None


def csv_columns(rules: ExtractionRules) -> list[str]:
    explode = csv_explode_field(rules)
    columns = list(CSV_META)
    for name, raw in rules.fields.items():
        rule = as_rule(raw)
        if name == explode and rule.fields:
            columns.extend(f"{name}.{sub}" for sub in rule.fields)
        else:
            columns.append(name)
    return columns


# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV Injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """Text as scraped, except that text a spreadsheet would evaluate gets a leading `'`
    (OWASP): a results CSV opened in Excel or LibreOffice runs no page's formula."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return json.dumps(value, ensure_ascii=False)


def csv_rows(page: dict[str, Any], rules: ExtractionRules) -> Iterator[list[str]]:
    """Rows for one page result ({url, final_url, status_code, state, error, data})."""
    meta = [_cell(page.get(k)) for k in CSV_META]
    data = page.get("data") or {}
    explode = csv_explode_field(rules)
    base = {name: data.get(name) for name in rules.fields if name != explode}

    def row(item: Any) -> list[str]:
        cells = list(meta)
        for name, raw in rules.fields.items():
            rule = as_rule(raw)
            if name != explode:
                cells.append(_cell(base[name]))
            elif rule.fields:
                item_dict = item if isinstance(item, dict) else {}
                cells.extend(_cell(item_dict.get(sub)) for sub in rule.fields)
            else:
                cells.append(_cell(item))
        return cells

    items = data.get(explode) if explode else None
    if explode and items:
        for item in items:
            yield row(item)
    else:
        yield row(None)


def csv_text(rows: Iterable[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows(rows)
    return buf.getvalue()
