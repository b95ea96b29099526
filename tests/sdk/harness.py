"""The runner shared by the SDK scripts: `@check` registers a check, `run()` runs them all, prints one
line per check and a closing 'N passed, N failed' line, and exits non-zero on any failure."""
import sys
import traceback

_checks = []


def check(fn):
    _checks.append(fn)
    return fn


def run():
    passed = failed = 0
    for fn in _checks:
        try:
            fn()
            passed += 1
            print(f"ok {fn.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
