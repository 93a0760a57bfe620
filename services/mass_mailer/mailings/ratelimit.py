"""Token buckets per relay and per recipient domain, with an adaptive rate (pure, clock passed in).

A 4xx reply halves the rate of the bucket it came from (down to ``floor``); every success adds a
little back (additive increase) until the configured rate, so a throttling receiver slows the
sender down instead of pausing the mailing.
"""

from __future__ import annotations

from dataclasses import dataclass

UNLIMITED_START = 50.0  # rate a formerly unlimited bucket drops to after its first 4xx


@dataclass
class Bucket:
    limit: float  # configured rate per second; 0 = unlimited
    rate: float  # current rate (<= limit when limited; inf when unlimited and never throttled)
    tokens: float
    stamp: float
    floor: float = 0.5

    @classmethod
    def new(cls, limit: float, now: float, rate: float | None = None) -> Bucket:
        start = rate if rate is not None else (limit if limit > 0 else float("inf"))
        return cls(
            limit=limit, rate=start, tokens=min(start, 10.0) if start != float("inf") else 0.0, stamp=now
        )

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 = send now); takes the token when 0."""
        if self.rate == float("inf"):
            return 0.0
        burst = max(1.0, min(self.rate, 50.0))
        self.tokens = min(burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def throttled(self) -> None:
        current = UNLIMITED_START if self.rate == float("inf") else self.rate
        self.rate = max(self.floor, current / 2)
        self.tokens = min(self.tokens, 1.0)

    def succeeded(self) -> None:
        if self.rate == float("inf"):
            return
        ceiling = self.limit if self.limit > 0 else float("inf")
        self.rate = min(ceiling, self.rate + 0.1)
        if self.limit <= 0 and self.rate >= UNLIMITED_START * 4:
            self.rate = float("inf")  # recovered: back to unlimited


class RateLimiter:
    def __init__(self, relay_limit: float, domain_limit: float) -> None:
        self.relay_limit = relay_limit
        self.domain_limit = domain_limit
        self.buckets: dict[str, Bucket] = {}

    def bucket(self, key: str, now: float, saved: dict[str, float] | None = None) -> Bucket:
        found = self.buckets.get(key)
        if found is None:
            limit = self.relay_limit if key.startswith("relay:") else self.domain_limit
            rate = (saved or {}).get(key)
            found = self.buckets[key] = Bucket.new(limit, now, rate)
        return found

    def delay(self, keys: list[str], now: float) -> float:
        """How long to wait before the next send through all ``keys``; takes tokens when 0."""
        waits = [self.bucket(k, now).wait_time(now) for k in keys]
        longest = max(waits, default=0.0)
        if longest > 0:
            for key, wait in zip(keys, waits, strict=True):
                if wait == 0 and self.buckets[key].rate != float("inf"):
                    self.buckets[key].tokens += 1.0  # give back: we did not send
        return longest

    def snapshot(self) -> dict[str, float]:
        """Rates that differ from the configuration (to persist)."""
        return {
            k: b.rate
            for k, b in self.buckets.items()
            if b.rate != float("inf") and (b.limit <= 0 or b.rate < b.limit)
        }
