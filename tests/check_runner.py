"""The end of every ``*_checks.py`` script: run each check, print one JSON line."""

import json
import traceback


def report(checks: dict) -> None:
    """Runs ``checks`` (name -> function); prints ``{name: error or ""}`` as JSON."""
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = ""
        except Exception:
            results[name] = traceback.format_exc()[-3000:]
    print(json.dumps(results))
