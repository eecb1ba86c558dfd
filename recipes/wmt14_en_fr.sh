#!/usr/bin/env bash
# WMT'14 En-Fr: prepare, train, evaluate, compare (see the README's recipe section).
#   bash recipes/wmt14_en_fr.sh                     # all steps, 8x4096, post-ln pre-ln admin, 6-6 18-18
#   METHODS=admin DEPTHS=60-12 BATCH=128x4096 bash recipes/wmt14_en_fr.sh train
# Every setting of recipes/run.sh applies.
set -euo pipefail
export CORPUS=wmt14-en-fr
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
