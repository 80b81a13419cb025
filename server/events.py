"""Progress events from the ServerApp, for whoever runs it in-process (the CLI's progress bar).

Under `flwr run` nobody subscribes and the events only go to the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerEvent:
    phase: str  # "preprocessing" | "binning" | "round" | "personalization" | "done"
    server_round: int = 0
    total_rounds: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[ServerEvent], None]
_lock = threading.Lock()
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(event: ServerEvent) -> None:
    with _lock:
        targets = list(_listeners)
    for listener in targets:
        listener(event)
