"""pytest plugin loaded by run.sh when YARDSTICK_SHIM=1 (the default).

The upstream suite decides that the pooler has started by querying its admin
console.  A pooler without an admin console would then error in every test's
setup and the run would measure nothing else.  This plugin replaces that one
readiness check with "the listening TCP port accepts a connection", applied
identically whatever binary is under test.  Everything else in the suite is
left as it is, so tests that really use the admin console still fail.

It also makes stopping the pooler escalate: the suite stops it with SIGQUIT
(fast shutdown since PgBouncer 1.23) and waits forever; an older PgBouncer
ignores SIGQUIT, so after 3 s SIGTERM, then SIGKILL, are sent.
"""

import asyncio
import signal
import socket
import sys
import time

import pytest


def _wait_tcp(self):
    deadline = time.monotonic() + 10
    while True:
        if getattr(self, "aprocess", None) is not None and self.aprocess.returncode is not None:
            self.print_logs()
            raise RuntimeError(f"pooler exited with status {self.aprocess.returncode}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                self.print_logs()
                raise
            time.sleep(0.1)


async def _wait_until_running(self):
    _wait_tcp(self)


async def _stop(self):
    self.sigquit()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = getattr(self, "aprocess", None)
        if proc is None:
            break
        try:
            await asyncio.wait_for(proc.wait(), 3)
            break
        except asyncio.TimeoutError:
            self.send_signal(sig)
    await self.wait_for_exit()


def _patch():
    for mod in list(sys.modules.values()):
        cls = getattr(mod, "Bouncer", None)
        if isinstance(cls, type) and hasattr(cls, "wait_until_running"):
            if getattr(cls, "_yardstick_patched", False):
                continue
            cls.wait_until_running = _wait_until_running
            cls.stop = _stop
            cls._yardstick_patched = True


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    _patch()
