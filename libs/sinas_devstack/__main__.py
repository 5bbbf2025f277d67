"""`python -m sinas_devstack`: what `make run` starts."""

from __future__ import annotations

import sys

from sinas_devstack.supervisor import RunOptions, Supervisor

if __name__ == "__main__":
    sys.exit(Supervisor(RunOptions.from_environment()).run())
