#!/bin/bash
# Runs kobako's tests (as root, on a real kernel). Arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
/opt/kobako/bin/ruff check src tests bench || exit 1
/opt/kobako/bin/python -m pytest -q -rs "$@"
status=$?
# pytest exits 5 when no test was collected: that is not a pass.
[ "$status" -eq 5 ] && echo "no tests collected" >&2
exit "$status"
