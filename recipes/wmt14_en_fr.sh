#!/usr/bin/env bash
# WMT'14 En-Fr: prepare, train, evaluate, compare (see docs/published-settings.md).
# The defaults are Transformer-Clinic's published En-Fr runs: RAdam, lr 7e-4, plain fp16,
# 50 epochs, epochs 41-50 averaged, beam 5 / lenpen 0.8; 6L at 80x8000 (8 GPUs x 8000 x 10).
#   bash recipes/wmt14_en_fr.sh                                    # all steps, 6L-6L
#   METHODS=admin-profiled DEPTHS=60-12 BATCH=256x5000 bash recipes/wmt14_en_fr.sh train
# BATCH=8x4096 or 128x4096 runs the admin-torch settings on this corpus instead.
# Every setting of recipes/run.sh applies.
set -euo pipefail
export CORPUS=wmt14-en-fr
export BATCH="${BATCH:-80x8000}"
export DEPTHS="${DEPTHS:-6-6}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
