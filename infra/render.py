"""Renders the Jinja2 templates in `configs/`; the one place config text is produced."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(CONFIG_DIR),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty line
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)
