# Shared by bin/run, bin/test and the production smoke test: a virtual environment with the pinned
# requirements. Sourced, not run. OREE_VENV names the folder (default .venv); it is reinstalled only
# when the requirements files it was built from change. `ensure_venv FILE --fresh` then builds it
# anew instead of installing over it, so a package the file no longer names cannot linger there.

ensure_venv() {
  local requirements="$1"
  local fresh="${2:-}"
  local venv="${OREE_VENV:-.venv}"
  local python="${PYTHON:-}"
  if [ -z "$python" ]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
      if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        python="$candidate"
        break
      fi
    done
  fi
  [ -n "$python" ] || { echo "OreeStats needs Python 3.11 or newer on PATH" >&2; exit 1; }
  local stamp="$venv/.requirements-$(basename "$requirements").sha256"
  local want
  # The file itself and requirements.txt, which every other requirements file includes.
  want=$(cat "$requirements" requirements.txt | sha256sum | cut -d' ' -f1)
  if [ "$fresh" = "--fresh" ] && [ -d "$venv" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "Removing $venv: $requirements changed"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "Creating $venv with $python"
    "$python" -m venv "$venv"
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing $requirements into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
}
