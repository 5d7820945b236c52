"""Fuzz the REST API from its own OpenAPI schema (schemathesis, in-process ASGI).

Every generated request must get a documented status and a body matching the schema;
invalid input must be refused with a 4xx, never a 5xx. The "schema-valid data must be
accepted" check is off: some refusals cannot be written in JSON Schema (a selector that
does not compile, a URL on a private network, render_js on a deployment without a
renderer); they get a 422 naming the field, tested in test_tasks_api."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import select
from svc_helpers import Account, make_account

from app.crud import tasks as crud
from common.db import session_scope
from common.models import Plan, Task, TaskState, User


@pytest.fixture(scope="module")
def fuzz_account(service_env: dict[str, str]) -> Iterator[Account]:
    """A user on a plan without practical limits, so the fuzzer is not throttled."""
    with session_scope() as session:
        if session.scalar(select(Plan).where(Plan.name == "fuzz")) is None:
            session.add(
                Plan(id=99, name="fuzz", monthly_credits=10**9, rate_limit_per_minute=10**6, max_concurrent_tasks=10**6)
            )
    yield make_account(plan="fuzz")
    with session_scope() as session:  # the workers of later tests must not crawl fuzzed URLs
        active = session.execute(
            select(Task.id, Task.user_id)
            .join(User, User.id == Task.user_id)
            .join(Plan, Plan.id == User.plan_id)
            .where(Plan.name == "fuzz", Task.state.in_([TaskState.queued, TaskState.running]))
        ).all()
        for task_id, user_id in active:
            user = session.get(User, user_id)
            assert user is not None
            crud.cancel(session, user, task_id)


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))


def fuzz(operation: Any, headers: dict[str, str], seen: Counter[tuple[str, int]]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case: Any) -> None:
        response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
        seen[(f"{case.method} {case.path}", response.status_code)] += 1

    check()


def test_api_conforms_to_its_schema(app: Any, fuzz_account: Account) -> None:
    # schemathesis' lazy pytest loader does not support pytest 9 yet; drive each operation's
    # hypothesis strategy directly and report every failing operation at once.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    seen: Counter[tuple[str, int]] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        headers = {} if operation.path.startswith("/api/v1/billing") else dict(fuzz_account.headers)
        try:
            fuzz(operation, headers, seen)
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    print(sorted(seen.items()))
    assert operations >= 10
    assert not failures, "\n\n".join(failures)
    # the fuzzer got past validation too, not only into 422s
    assert seen[("POST /api/v1/tasks", 201)] and seen[("POST /api/v1/keys", 201)]


def test_openapi_documents_auth_and_errors(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    create = spec["paths"]["/api/v1/tasks"]["post"]
    assert {"201", "401", "402", "422", "429"} <= set(create["responses"])
    assert {"ExtractionRules-Input", "FieldRule-Input"} <= set(spec["components"]["schemas"])
    urls = spec["components"]["schemas"]["TaskCreate"]["properties"]["urls"]
    assert urls["uniqueItems"] is True and urls["maxItems"] == 100


def test_stateful_sequences_follow_the_links(app: Any, fuzz_account: Account) -> None:
    """create -> get / cancel / results, create key -> revoke, along the OpenAPI links."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    base = schema.as_state_machine()
    calls: Counter[tuple[str, int]] = Counter()

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # a fresh account per scenario: what a list returns must not depend on earlier
            # scenarios, or Hypothesis sees the same choices lead elsewhere and calls it flaky
            self.headers = make_account(plan="fuzz").headers

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {} if case.path.startswith("/api/v1/billing") else dict(self.headers)}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            calls[(f"{case.method} {case.path}", response.status_code)] += 1
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

    Machine.run(
        settings=settings(
            max_examples=max(25, EXAMPLES // 2),
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
    print(sorted(calls.items()))
    # sequences really followed the links into existing resources (not only 404s on random ids)
    assert any(status < 300 for (operation, status) in calls if "_id}" in operation)
