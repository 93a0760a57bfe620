"""Token buckets per relay and per recipient domain, with an adaptive rate (pure, clock passed in).

Replies are counted per bucket in one-second windows. A window in which temporary failures (4xx
replies for a domain, connection problems for a relay) were at least a fifth of the replies,
and at least two, halves the rate (down to ``floor``): at most once a second, however many
sends were in flight. A window without failures raises the rate by a quarter (at least 0.5/s)
until the configured one. So a receiver that throttles slows the sender down instead of
pausing the mailing, while the odd greylisted recipient (deferred and retried on its own)
does not slow down anybody else.
"""

from __future__ import annotations

from dataclasses import dataclass

UNLIMITED_START = 50.0  # rate a formerly unlimited bucket drops to after its first 4xx


WINDOW_S = 1.0
THROTTLE_SHARE = 0.2  # failures / replies in a window that mean "slow down"
THROTTLE_MIN = 2  # ... and at least this many failures
RECOVERY = 0.25  # rate increase after a window without failures (fraction, at least 0.5/s)


@dataclass
class Bucket:
    limit: float  # configured rate per second; 0 = unlimited
    rate: float  # current rate (<= limit when limited; inf when unlimited and never throttled)
    tokens: float
    stamp: float
    floor: float = 0.5
    window_start: float = 0.0
    window_ok: int = 0
    window_failed: int = 0

    @classmethod
    def new(cls, limit: float, now: float, rate: float | None = None) -> Bucket:
        start = rate if rate is not None else (limit if limit > 0 else float("inf"))
        return cls(
            limit=limit,
            rate=start,
            tokens=min(start, 10.0) if start != float("inf") else 0.0,
            stamp=now,
            window_start=now,
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

    def throttled(self, now: float) -> None:
        """A temporary failure through this bucket."""
        self._close_window(now)
        self.window_failed += 1

    def succeeded(self, now: float) -> None:
        self._close_window(now)
        self.window_ok += 1

    def _close_window(self, now: float) -> None:
        """Judge the window that ended (at the first reply after it): the replies of the sends
        in flight when the rate changed all land in one window, so they count once."""
        if now - self.window_start < WINDOW_S:
            return
        failed, replies = self.window_failed, self.window_ok + self.window_failed
        if failed >= THROTTLE_MIN and failed >= THROTTLE_SHARE * replies:
            self._slow_down()
        elif failed == 0 and replies > 0:
            self._speed_up()
        self.window_start, self.window_ok, self.window_failed = now, 0, 0

    def _slow_down(self) -> None:
        current = UNLIMITED_START if self.rate == float("inf") else self.rate
        self.rate = max(self.floor, current / 2)
        self.tokens = min(self.tokens, 1.0)

    def _speed_up(self) -> None:
        if self.rate == float("inf"):
            return
        ceiling = self.limit if self.limit > 0 else float("inf")
        self.rate = min(ceiling, self.rate + max(0.5, self.rate * RECOVERY))
        if self.limit <= 0 and self.rate >= UNLIMITED_START * 4:
            self.rate = float("inf")  # recovered: back to unlimited


class RateLimiter:
    """The configured limits are for the whole service; a process with ``share`` of the work
    (see ``set_share``) keeps to that share of them."""

    def __init__(self, relay_limit: float, domain_limit: float) -> None:
        self.relay_limit = relay_limit
        self.domain_limit = domain_limit
        self.share = 1.0
        self.buckets: dict[str, Bucket] = {}

    def limit_for(self, key: str) -> float:
        configured = self.relay_limit if key.startswith("relay:") else self.domain_limit
        return configured * self.share  # 0 stays 0: unlimited

    def bucket(self, key: str, now: float, saved: dict[str, float] | None = None) -> Bucket:
        found = self.buckets.get(key)
        if found is None:
            limit = self.limit_for(key)
            rate = (saved or {}).get(key)
            found = self.buckets[key] = Bucket.new(limit, now, min(rate, limit) if rate and limit else rate)
        return found

    def set_share(self, share: float) -> None:
        """This process now does ``share`` (0 < share <= 1) of the sending: limited buckets
        take that share of their configured rate (a throttled rate is kept if lower)."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.share = share
        for key, bucket in self.buckets.items():
            limit = self.limit_for(key)
            if limit > 0:
                bucket.limit = limit
                bucket.rate = min(bucket.rate, limit)

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
