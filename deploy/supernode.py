"""`flower-supernode` with a shorter wait between its polls of the SuperLink.

Flower 1.42's SuperNode sleeps 3 s whenever it asks the SuperLink for a message and there is
none (`start_client_internal`: `time.sleep(3)`), and 0.5 s between checks for its
ClientApp's reply. A round is two messages (train, evaluate), each arriving while every node
is in that sleep, so the wait alone was most of a small model's deployed round. This runs
Flower's own `flower-supernode` entry point with the idle sleep capped at `--poll-interval`
(the SuperLink then answers about 1/poll-interval empty pulls per idle node and second: keep
it at 0.5 s or more for large federations), at `ACTIVE_POLL` while a run is sending the node
messages (unless the interval is set above 0.5 s), and the waits for its ClientApp's reply at
`LOCAL_WAIT`. Nothing else changes: same
arguments, TLS, node authentication, node config.

    python -m jointcredit.deploy.supernode --poll-interval 0.5 FLOWER-SUPERNODE-ARGS...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_POLL = 0.5  # seconds
# Flower's loop sleeps 3 s when the SuperLink had nothing for it; its shorter sleeps (0.5 s)
# wait on the node's own state (its ClientApp's reply, an object still being stored), which
# is cheap to look at again: each such wait was a quarter second per message on average.
IDLE_SLEEP = 3.0
LOCAL_WAIT = 0.02  # seconds
# Those shorter waits happen only while the node holds a message, i.e. during a run, whose next
# message then comes within seconds: for a while after one the node polls at ACTIVE_POLL, a
# node without a run at `--poll-interval` (the SuperLink's load from idle nodes is unchanged).
# An operator who sets an interval above the default (a large federation) keeps it throughout.
ACTIVE_POLL = 0.2  # seconds
ACTIVE_WINDOW = 30.0  # seconds after the node last held a message


class ShortSleeps:
    """The `time` module as one Flower module sees it: its idle poll capped at `cap`, or at
    `active_poll` within `active_window` seconds of the node's last message, and its waits on
    local state at `local_cap`."""

    def __init__(
        self,
        cap: float,
        local_cap: float = LOCAL_WAIT,
        active_poll: float = ACTIVE_POLL,
        active_window: float = ACTIVE_WINDOW,
    ) -> None:
        self.cap, self.local_cap = cap, local_cap
        self.active_poll = min(active_poll, cap) if cap <= DEFAULT_POLL else cap
        self.active_window = active_window
        self.last_message = -float("inf")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if seconds < IDLE_SLEEP:
            self.last_message = time.monotonic()
            time.sleep(min(seconds, self.local_cap))
            return
        active = time.monotonic() - self.last_message < self.active_window
        time.sleep(min(seconds, self.active_poll if active else self.cap))


def shorten_polls(cap: float) -> None:
    """Cap the sleeps of Flower's SuperNode loop; refuses if Flower's module has changed
    shape (then the installed Flower needs a look, not a silent no-op)."""
    from flwr.supernode import start_client_internal as loop

    if getattr(loop, "time", None) is not time:
        raise RuntimeError(
            "flwr.supernode.start_client_internal no longer uses the time module: "
            "check the installed Flower's SuperNode loop before shortening its polls"
        )
    setattr(loop, "time", ShortSleeps(cap))  # noqa: B010 - the module does not export it


# A pull of objects that are not there yet (the other side has announced the message but is
# still storing its objects) waits Flower's default 1 s, doubling to 10 s, before asking again:
# most of a small model's message. These instead.
PULL_BACKOFF = 0.01  # seconds, doubling...
PULL_BACKOFF_CAP = 0.05  # ...up to this (loopback: the ClientApp from its own SuperNode)
REMOTE_PULL_BACKOFF_CAP = 0.1  # the SuperNode from the SuperLink


def shorten_object_pulls(
    function: str, initial: float = PULL_BACKOFF, cap: float = PULL_BACKOFF_CAP
) -> None:
    """Make Flower's `inflatable_utils.<function>` retry an unavailable object after `initial`
    seconds (doubling, capped at `cap`) by default, in this process (and its forks) only;
    refuses if the function has changed shape (the installed Flower then needs a look, not a
    silent no-op)."""
    from flwr.supercore.inflatable import inflatable_utils

    pull = getattr(inflatable_utils, function, None)
    defaults = getattr(pull, "__kwdefaults__", None) or {}
    if "initial_backoff" not in defaults or "backoff_cap" not in defaults:
        raise RuntimeError(
            f"flwr's inflatable_utils.{function} has no initial_backoff/backoff_cap defaults: "
            "check the installed Flower before shortening its pulls"
        )
    defaults["initial_backoff"], defaults["backoff_cap"] = initial, cap


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    cap = DEFAULT_POLL
    if args[:1] == ["--poll-interval"]:
        try:
            cap = float(args[1])
        except (IndexError, ValueError):
            raise SystemExit("--poll-interval needs a number of seconds") from None
        if not 0.01 <= cap <= 3:
            raise SystemExit("--poll-interval: between 0.01 and 3 seconds")
        args = args[2:]
    shorten_polls(cap)
    # The SuperNode's pull of a message's objects from the SuperLink.
    shorten_object_pulls("pull_objects", cap=REMOTE_PULL_BACKOFF_CAP)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *args]
    flower_supernode()


if __name__ == "__main__":
    main()
