#!/usr/bin/env bash
# IWSLT'14 De-En, the Admin paper's one-GPU setting: prepare, train, evaluate, compare.
# Defaults are Transformer-Clinic's published runs (docs/published-settings.md): 6L-6L
# transformer_iwslt_de_en, RAdam, lr 7e-4, warm-up 6000, dropout 0.3, 4096 tokens on one
# GPU, fp16, seeds 1111 2222 3333 4444 5555; epochs 81-90 averaged, beam 5.
#
#   PREPARE_ARGS="--raw-dir /datasets/iwslt14 --offline" bash recipes/iwslt14_de_en.sh
#   METHODS="admin" SEEDS=1111 bash recipes/iwslt14_de_en.sh train evaluate
#
# Data: the TED archive de-en.tgz of IWSLT 2014 (https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz
# originally; without --offline the prepare step fetches the copy fairseq's users use,
# http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz). Published (Admin paper,
# Table 1, tokenized BLEU on the lower-cased test set, mean +- std over 5 seeds):
#   Post-LN 35.64 +- 0.23   Pre-LN 35.50 +- 0.04   Admin 35.67 +- 0.15
# Every setting of recipes/run.sh applies.
set -euo pipefail
export CORPUS=iwslt14-de-en
export BATCH="${BATCH:-1x4096}"
export DEPTHS="${DEPTHS:-6-6}"
export METHODS="${METHODS:-post-ln pre-ln admin-profiled admin}"
export SEEDS="${SEEDS-1111 2222 3333 4444 5555}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
