#!/usr/bin/env bash
# The recipe chain: prepare -> train -> evaluate -> compare, for any corpus.
#
#   CORPUS=wmt17-en-de METHODS="post-ln pre-ln admin" DEPTHS="6-6 18-18" BATCH=8x4096 \
#       bash recipes/run.sh                 # all four steps
#   CORPUS=wmt17-en-de bash recipes/run.sh train evaluate   # some steps only
#   DRY_RUN=1 TRAIN_ARGS="--gpus 8" CORPUS=wmt17-en-de bash recipes/run.sh train   # print the commands
#
# Settings (environment):
#   CORPUS        wmt14-en-fr, wmt17-en-de, bible-en-fr, bible-en-de, ... (required)
#   DATA          prepared data folder (default data/$CORPUS)
#   RUNS          where run folders go (default runs/$CORPUS); results go to $RUNS/comparison
#   METHODS       post-ln pre-ln admin admin-scalar admin-profiled deepnet (default: post-ln pre-ln admin)
#   DEPTHS        ENC-DEC depths (default: 6-6 18-18)
#   SEEDS         seeds, one run each (default: one run with the recipe's published seed);
#                 run folders then end in -seed$SEED and the comparison adds mean +- std.
#                 admin-profiled: the runs of later seeds reuse the first seed's profile, as
#                 the published IWSLT'14 runs did (one profiling run, five trainings)
#   BATCH         8x4096, 128x4096, 80x8000, 256x5000, 1x4096 (published), or AxB with RECIPE=regular|huge|clinic|iwslt
#   AVG_EPOCHS    FIRST-LAST epochs to average (default: the recipe's published window); the
#                 train step stops at LAST and keeps these epochs, the evaluate step averages them
#   PREPARE_ARGS  extra flags for the prepare step (e.g. "--raw-dir /data/wmt --offline")
#   TRAIN_ARGS    extra flags for the train step (e.g. "--gpus 8 --nodes 2 --node-rank 0")
#   FAIRSEQ_ARGS  extra fairseq-train flags, passed last
#   EVAL_ARGS     extra flags for the evaluate step (e.g. "--avg-last 5")
#   SLURM=1       start the training workers with srun (inside an allocation; see recipes/slurm)
#   DRY_RUN=1     print the commands instead of running them
#   PYTHON        interpreter (default: the repository's .venv, else python3)
#
# Re-running continues where it stopped: preparation skips finished steps, fairseq resumes
# from checkpoint_last.pt, and evaluation is redone (it is cheap). A run that fails while
# training (e.g. diverges) is reported and the chain goes on, so that the comparison shows
# it; a configuration error stops everything at once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
: "${CORPUS:?set CORPUS, e.g. CORPUS=wmt17-en-de (see the header of recipes/run.sh)}"
DATA="${DATA:-$ROOT/data/$CORPUS}"
RUNS="${RUNS:-$ROOT/runs/$CORPUS}"
METHODS="${METHODS:-post-ln pre-ln admin}"
DEPTHS="${DEPTHS:-6-6 18-18}"
BATCH="${BATCH:-8x4096}"
SEEDS="${SEEDS:-}"
DRY_RUN="${DRY_RUN:-0}"
read -r -a prepare_args <<< "${PREPARE_ARGS:-}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"
read -r -a fairseq_args <<< "${FAIRSEQ_ARGS:-}"
read -r -a eval_args <<< "${EVAL_ARGS:-}"
if [ -n "${RECIPE:-}" ]; then train_args+=(--recipe "$RECIPE"); fi
if [ -n "${AVG_EPOCHS:-}" ]; then train_args+=(--avg-epochs "$AVG_EPOCHS"); eval_args+=(--avg-epochs "$AVG_EPOCHS"); fi
if [ "${SLURM:-0}" = 1 ]; then train_args+=(--slurm); fi

say() { printf '[recipe] %s\n' "$*"; }
die() { printf '[recipe] error: %s\n' "$*" >&2; exit 2; }
run_or_print() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; printf '\n'; else "$@"; fi
}

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then steps=(prepare train evaluate compare); fi
for step in "${steps[@]}"; do
  case "$step" in prepare|train|evaluate|compare) ;; *) die "unknown step '$step'; steps are prepare, train, evaluate, compare" ;; esac
done

seeds=("")  # "" = the recipe's seed, no suffix
if [ -n "$SEEDS" ]; then
  read -r -a seeds <<< "$SEEDS"
  for seed in "${seeds[@]}"; do
    case "$seed" in *[!0-9]*) die "SEEDS must be whole numbers; got '$seed'" ;; esac
  done
fi
run_dir() {  # method depth seed
  if [ -n "$3" ]; then echo "$RUNS/$1-$2-$BATCH-seed$3"; else echo "$RUNS/$1-$2-$BATCH"; fi
}
run_dirs=()
for method in $METHODS; do
  for depth in $DEPTHS; do
    for seed in "${seeds[@]}"; do
      run_dirs+=("$(run_dir "$method" "$depth" "$seed")")
    done
  done
done
failed=()

for step in "${steps[@]}"; do
  case "$step" in
  prepare)
    say "step prepare: $CORPUS -> $DATA"
    run_or_print "$PYTHON" -m admin_fairseq.recipes.prepare --corpus "$CORPUS" --out "$DATA" \
      ${prepare_args[@]+"${prepare_args[@]}"}
    ;;
  train)
    n=${#run_dirs[@]}; k=0
    for method in $METHODS; do
      for depth in $DEPTHS; do
        first=""
        for seed in "${seeds[@]}"; do
          k=$((k + 1))
          dir="$(run_dir "$method" "$depth" "$seed")"
          say "step train, run $k of $n: $method $depth $BATCH${seed:+ seed $seed} -> $dir"
          dry=(); if [ "$DRY_RUN" = 1 ]; then dry=(--dry-run); fi
          with_seed=(); if [ -n "$seed" ]; then with_seed=(--seed "$seed"); fi
          if [ "$method" = admin-profiled ] && [ -n "$first" ] && [ -f "$first/admin_profile.json" ] \
             && [ ! -f "$dir/admin_profile.json" ] && [ "$DRY_RUN" != 1 ]; then
            mkdir -p "$dir" && cp "$first/admin_profile.json" "$dir/admin_profile.json"
            say "reusing the profile of $first"
          fi
          set +e
          "$PYTHON" -m admin_fairseq.recipes.train --data "$DATA" --method "$method" --depth "$depth" \
            --batch "$BATCH" --save-dir "$dir" ${with_seed[@]+"${with_seed[@]}"} \
            ${train_args[@]+"${train_args[@]}"} ${dry[@]+"${dry[@]}"} -- ${fairseq_args[@]+"${fairseq_args[@]}"}
          code=$?
          set -e
          if [ "$code" -eq 2 ]; then exit 2; fi  # bad settings: the message says what to fix
          if [ "$code" -ne 0 ]; then failed+=("$dir (train exit $code)"); say "training $dir failed (exit $code); going on"; fi
          first="${first:-$dir}"
        done
      done
    done
    ;;
  evaluate)
    for dir in "${run_dirs[@]}"; do
      say "step evaluate: $dir"
      if [ "$DRY_RUN" = 1 ]; then
        run_or_print "$PYTHON" -m admin_fairseq.recipes.evaluate --run "$dir" ${eval_args[@]+"${eval_args[@]}"}
      elif ! "$PYTHON" -m admin_fairseq.recipes.evaluate --run "$dir" ${eval_args[@]+"${eval_args[@]}"}; then
        failed+=("$dir (evaluate)"); say "evaluating $dir failed; going on"
      fi
    done
    ;;
  compare)
    say "step compare -> $RUNS/comparison"
    run_or_print "$PYTHON" -m admin_fairseq.recipes.compare "${run_dirs[@]}" --out "$RUNS/comparison" \
      --title "$CORPUS, $BATCH"
    ;;
  esac
done

if [ ${#failed[@]} -gt 0 ]; then
  say "finished with ${#failed[@]} failed run(s):"
  printf '[recipe]   %s\n' "${failed[@]}"
  exit 1
fi
say "done"
