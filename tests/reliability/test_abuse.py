"""Issue 17's four high findings on a deployed phase-1 stack (checks in abuse.py).

They run on rel-p1, the stack test_phase1_faults.py deploys. When that module is part of the
session it runs them (its `TestAbuse`) and this module skips, so a full run deploys rel-p1
once; run alone, this module deploys rel-p1 plainly (no interrupted first deploy) and
destroys it afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import require_toolchain
from tests.reliability.abuse import Abuse
from tests.reliability.relstack import Deployed, deploy_stack, destroy

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

PHASE1_MODULE = "test_phase1_faults"


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if any(item.module is not None and item.module.__name__.endswith(PHASE1_MODULE) for item in request.session.items):
        pytest.skip(f"run on the rel-p1 stack of {PHASE1_MODULE}.py (its TestAbuse), which this session deploys")
    require_toolchain()
    d, seconds, error, _ = deploy_stack(1, tmp_path_factory.mktemp("rel-p1"))
    try:
        if error is not None:
            raise error
        print(f"rel-p1 deployed in {seconds} s")
        assert d is not None
        yield d
    finally:
        if d is not None:
            left = destroy(d)
            assert left == {"containers": [], "networks": [], "volumes": []}, f"destroy left {left}"


class TestAbuse(Abuse):
    """A storm of made-up methods, a gzip-bomb webhook receiver, a catastrophic regex and a
    pathological page, one site's robots.txt spelled 1,000 ways."""
