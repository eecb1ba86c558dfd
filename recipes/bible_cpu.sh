#!/usr/bin/env bash
# The same recipe chain at CPU scale on the Bible corpus (Mark held out as the test set):
# a small model (width 128), one CPU process, 2048 tokens per update, lr 2e-3 (where deep
# Post-LN stalls while Admin and Pre-LN train; see the README's main job).
#   bash recipes/bible_cpu.sh                           # en-fr, 3 methods x 6-6, 300 updates
#   UPDATES=100 TRAIN_SIZE=3000 DEPTHS=2-2 bash recipes/bible_cpu.sh   # a tiny smoke run
# Every setting of recipes/run.sh applies; these add:
#   PAIR (en-fr), UPDATES (300), TRAIN_SIZE (all), VOCAB (8000), TEST_SIZE (all 678 verses).
set -euo pipefail
PAIR="${PAIR:-en-fr}"
UPDATES="${UPDATES:-300}"
export CORPUS="bible-$PAIR"
export BATCH="${BATCH:-1x2048}"
export RECIPE="${RECIPE:-regular}"
export DEPTHS="${DEPTHS:-6-6}"
prepare=(--vocab-size "${VOCAB:-8000}")
if [ -n "${TRAIN_SIZE:-}" ]; then prepare+=(--train-size "$TRAIN_SIZE"); fi
if [ -n "${TEST_SIZE:-}" ]; then prepare+=(--test-size "$TEST_SIZE"); fi
export PREPARE_ARGS="${PREPARE_ARGS:-${prepare[*]}}"
export TRAIN_ARGS="${TRAIN_ARGS:---cpu --size cpu --log-interval 10}"
export FAIRSEQ_ARGS="${FAIRSEQ_ARGS:---lr 2e-3 --warmup-updates $((UPDATES / 2)) --dropout 0.1 --max-update $UPDATES --save-interval-updates $UPDATES --no-epoch-checkpoints --validate-interval-updates 50}"
export EVAL_ARGS="${EVAL_ARGS:---avg-last 1 --beam 4 --lenpen 1.0}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
