#!/usr/bin/env bash
# WMT'17 En-De: prepare, train, evaluate, compare (see docs/published-settings.md).
# The defaults are admin-torch's published runs: 8x4096 (or BATCH=128x4096), epochs 36-45
# averaged, beam 4 / lenpen 0.6.
#   bash recipes/wmt17_en_de.sh                     # all steps, 8x4096, post-ln pre-ln admin, 6-6 18-18
#   METHODS="admin admin-profiled deepnet" DEPTHS=100-100 BATCH=128x4096 bash recipes/wmt17_en_de.sh
# Every setting of recipes/run.sh applies.
set -euo pipefail
export CORPUS=wmt17-en-de
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
