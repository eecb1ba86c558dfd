#!/usr/bin/env bash
# WMT'17 En-De: prepare, train, evaluate, compare (see the README's recipe section).
#   bash recipes/wmt17_en_de.sh                     # all steps, 8x4096, post-ln pre-ln admin, 6-6 18-18
#   METHODS="admin admin-profiled deepnet" DEPTHS=100-100 BATCH=128x4096 bash recipes/wmt17_en_de.sh
# Every setting of recipes/run.sh applies.
set -euo pipefail
export CORPUS=wmt17-en-de
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
