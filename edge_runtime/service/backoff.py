"""Exponential backoff, the one policy for everything that retries: a camera reopening its
source, the supervisor restarting a worker, a forwarder resending an item.

    backoff = Backoff(initial_s=1, max_s=60, jitter=0.5)
    backoff.delay(0)   # 0.0: nothing failed yet
    backoff.delay(3)   # 4 s at most: 1, 2, 4, ... up to max_s, each shortened by up to `jitter`

The caller counts its failures in a row; a success sets its count back to 0.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    # each wait shortened by a random fraction up to this, so that devices that lost the same
    # link do not retry in step
    jitter: float = 0.0
    rng: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row."""
        if failures <= 0:
            return 0.0
        base = min(self.max_s, self.initial_s * 2 ** min(failures - 1, 62))
        return float(base * (1.0 - self.jitter * self.rng())) if self.jitter else float(base)
