"""How long a test waits for something that should happen.

Every wait returns as soon as its condition holds, so a generous bound costs a
passing test nothing; it only decides how long a broken test hangs before it
fails. The bound is sized for this project's 2-core machines with every core
busy (scripts/stress.sh), where a turn that takes 50 ms on a quiet machine
can take seconds. ARIUM_TEST_WAIT overrides it.
"""

from __future__ import annotations

import os

WAIT_LIMIT = float(os.environ.get("ARIUM_TEST_WAIT", "30"))
