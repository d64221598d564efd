"""What a synthetic workload is made of (`WorkloadSpec`), and the timings it is simulated
against: the default session and idle timeouts, the day over which devices first launch, the
delay of an upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pipeline.engine import SessionConfig
from pipeline.vocabulary import DEFAULT_SESSION_TIMEOUT_S, MIN_TS_MS

# The default timeouts: the workload's gaps straddle these (see pipeline.workload.generator).
DEFAULT_TIMEOUT_MS: Final = round(DEFAULT_SESSION_TIMEOUT_S * 1000)
IDLE_TIMEOUT_MS: Final = round(SessionConfig().idle_timeout_s * 1000)
START_WINDOW_MS: Final = 86_400_000  # device first launches are spread over one day
MAX_UPLOAD_DELAY_MS: Final = 2_000  # an upload arrives within this long of its last event


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate; the same spec always gives the same bytes.

    Devices first launch at times spread over the day after `start_ms` and live for minutes
    to many hours. `events_per_device` is a mean (each device draws 0.5x to 1.5x of it, then
    ends its lifecycle). `duplicate_rate` is the share of valid events sent a second time,
    `bad_rate` the number of bad messages per valid event. `batch_size` is the largest number
    of fresh events in one upload (retries of the previous upload come on top); 1 means plain
    single-event messages.
    """

    devices: int = 1000
    apps: int = 3
    seed: int = 0
    start_ms: int = 1_790_000_000_000
    events_per_device: int = 40
    duplicate_rate: float = 0.01
    bad_rate: float = 0.001
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.devices < 0 or self.apps < 1 or self.events_per_device < 1:
            raise ValueError("devices must be >= 0, apps and events_per_device >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not (0.0 <= self.duplicate_rate <= 1.0 and 0.0 <= self.bad_rate <= 1.0):
            raise ValueError("duplicate_rate and bad_rate must be within [0, 1]")
        if self.start_ms < MIN_TS_MS:
            raise ValueError("start_ms must not be before 2000-01-01")
