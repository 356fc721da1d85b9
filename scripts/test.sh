#!/usr/bin/env bash
# Set everything up (or reuse .venv) and run the test suite.
#   bash scripts/test.sh            # default suite (< 10 min on 2 cores)
#   bash scripts/test.sh --slow     # only the tests marked slow
#   bash scripts/test.sh --all      # everything
# Extra arguments go to pytest. Exit code 5 (no tests collected) is a failure.
# Lint (ruff: pyflakes, pycodestyle, complexity and function-size limits; pyproject.toml) runs first.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export WANDB_MODE=disabled
marker=()
case "${1:-}" in
    --slow) marker=(-m slow); shift ;;
    --all) marker=(-m "slow or not slow"); shift ;;
esac
if ! python -m ruff check astro3s tests experiments scripts; then
    echo "[astro3s] ruff found problems (above): fix them, or give a reason in a noqa comment" >&2
    exit 1
fi
# napari's window needs a display: without one, a virtual X server (xvfb-run) where installed, so the
# GUI tests run for real instead of skipping
runner=()
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run > /dev/null 2>&1; then
    runner=(xvfb-run -a)
fi
set +e
"${runner[@]}" python -m pytest "${marker[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "[astro3s] pytest collected no tests: treating as a failure" >&2
fi
exit "$status"
