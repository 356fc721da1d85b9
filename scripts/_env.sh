# Shared by quickstart.sh and test.sh: create (or reuse) .venv and install astro3s into it.
# The CPU build of torch is installed first: a plain `torch` requirement would
# otherwise resolve to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_BIN=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "[astro3s] creating .venv with $PYTHON_BIN"
    "$PYTHON_BIN" -m venv .venv
fi
VENV_PY=.venv/bin/python
stamp=.venv/.astro3s-installed
# reinstall only when pyproject.toml changed since the last install
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[astro3s] installing torch (CPU) and astro3s[dev,cluster,sweep,tensorboard,nwb,napari,napari-test] into .venv"
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e ".[dev,cluster,sweep,tensorboard,nwb,napari,napari-test]"
    touch "$stamp"
fi
export WANDB_MODE=${WANDB_MODE:-offline}
export PATH="$PWD/.venv/bin:$PATH"
