"""Where a deployed node's vertical session host listens: the names the node's ClientApp
worker (`deploy.session_host`, which starts the host) and the node's forked tasks
(`client.vertical_app`, which reach it over `client.vertical_channel`) share.

Here, below both, because `deploy` must never import `client` (it starts the processes that
load the app; it never imports training code).
"""

from __future__ import annotations

from typing import Final

SOCKET_ENV: Final = "JOINTCREDIT_VERTICAL_SOCKET"  # the socket's path, inherited by the forks
SOCKET_NAME: Final = "vertical.sock"  # the socket's file name in the host's 0700 directory
