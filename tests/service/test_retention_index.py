"""The retention sweep (worker/reaper.py ``expire_results``) finds expired tasks through an
index on ``tasks.finished_at`` instead of reading every finished task every 10 minutes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, text
from svc_helpers import Account

from common.db import session_scope
from common.models import Task, TaskState

TERMINAL = [state for state in TaskState if state.terminal]

# 5,000 finished tasks over the last 29 days and 20 older ones: most rows are terminal, few expired
FILL = """
INSERT INTO tasks (id, user_id, state, rules, options, url_count, succeeded_count, failed_count,
                   credits_charged, attempts, finished_at)
SELECT gen_random_uuid(), :user_id, 'completed', '{}', '{}', 1, 1, 0, 1, 1,
       now() - make_interval(mins => CASE WHEN n <= 20 THEN 60 * 24 * 40 ELSE n * 8 END)
FROM generate_series(1, 5020) AS n
"""


def test_the_retention_sweep_uses_an_index_on_finished_at(account: Account) -> None:
    sweep = (
        select(Task.id)
        .where(Task.state.in_(TERMINAL), Task.finished_at < func.now() - timedelta(days=30))
        .order_by(Task.finished_at)
        .limit(2000)
    )
    with session_scope() as session:
        session.execute(text(FILL), {"user_id": account.user_id})
        session.execute(text("ANALYZE tasks"))
        sql = sweep.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        plan = "\n".join(session.scalars(text(f"EXPLAIN {sql}")))
        session.rollback()  # the rows (and their statistics) are not kept
    assert "ix_tasks_finished_at" in plan, plan
