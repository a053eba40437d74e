"""The checks the Kafka client scripts run: each a function under
`@check("what it shows")`, run at once, reported as one line, counted."""

import sys
import time
import traceback

passed = 0
failed = 0


def check(name):
    def wrap(f):
        global passed, failed
        started = time.monotonic()
        try:
            f()
            passed += 1
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
        return f

    return wrap


def finish(note=""):
    """Prints "N passed, M failed" and exits non-zero on a failure."""
    print(f"{passed} passed, {failed} failed{note}", flush=True)
    sys.exit(1 if failed else 0)
