"""`ray start` for a second node of a cluster on 127.0.0.1 (tests/ray_cluster.py says why):
Ray's rewrite of a loopback address to this machine's network address is turned off."""

import sys

from ray._private import services
from ray.scripts.scripts import main

services.resolve_ip_for_localhost = lambda host: host

if __name__ == "__main__":
    sys.exit(main())
