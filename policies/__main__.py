"""Entry point of the policy pack: `pulumi preview --policy-pack policies` runs this file
(`python -m pulumi.policy <engine> policies/` in the virtualenv of PulumiPolicy.yaml)."""

import sys
from pathlib import Path

# The pack imports `policies.rules` and `infra.catalog` (the price table) from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.pack import serve

serve()
