#!/usr/bin/env bash
# Mutation test of one module that computes numbers, outside the default test run: mutmut
# mutates the module in a copy of the project under mutants/MODULE/ and runs the module's own
# fast tests against every mutant, then lists the mutants no test killed
# (docs/mutation-testing.md explains each survivor). Usage:
#
#   tests/mutation/run.sh MODULE [MUTANT_NAME ...]
#
# MODULE is one of ranges, evidence, model, space, training, evaluation, summary, comparison,
# importance, ranking, stage, optimizers. Show a
# mutant's diff with `(cd mutants/MODULE && ../../.venv/bin/mutmut show NAME)`.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
module=${1:?"usage: $0 MODULE [MUTANT_NAME ...]  (ranges|evidence|model|space|training|evaluation|summary|comparison|importance|ranking|stage|optimizers)"}
shift
mutmut=${MUTMUT:-$root/.venv/bin/mutmut}

# The files each module's mutants live in, and the tests that are to kill them.
case $module in
  ranges) mutate=(narrowing/ranges.py); tests=(tests/test_ranges.py) ;;
  evidence) mutate=(narrowing/evidence.py); tests=(tests/test_evidence.py) ;;
  model) mutate=(training/model.py plan/memory_estimate.py); tests=(tests/test_model.py) ;;
  space) mutate=(search/space.py); tests=(tests/test_space.py) ;;
  # The import-time tests of test_training.py run iishpo in a child process, which mutmut
  # neither mutates nor attributes to a mutant (and which imports the installed package).
  # One torch thread: mutmut forks each mutant's run from a process that has trained, and
  # a fork's first parallel convolution waits forever for OpenMP threads it does not have.
  training) mutate=(training/fit.py training/classifier.py); tests=(tests/test_training.py tests/test_classifier.py
      --deselect tests/test_training.py::test_importing_any_module_changes_nothing_global
      --deselect tests/test_training.py::test_the_training_commands_configure_the_process_first)
    export OMP_NUM_THREADS=1 ;;
  evaluation) mutate=(jobs/evaluation.py); tests=(tests/test_evaluation.py) ;;
  summary) mutate=(results/summary.py); tests=(tests/test_summary.py) ;;
  comparison) mutate=(results/comparison.py); tests=(tests/test_comparison.py) ;;
  ranking) mutate=(results/ranking.py); tests=(tests/test_ranking.py) ;;
  # Its real trial stores are trained in the process mutmut forks from: one torch thread,
  # as for training.
  importance) mutate=(results/importance.py); tests=(tests/test_importance.py)
    export OMP_NUM_THREADS=1 ;;
  # The stage's tests train stand-ins; test_halving.py checks the promotions a stage reads.
  stage) mutate=(jobs/stage.py); tests=(tests/test_stage.py tests/test_seeds.py
      tests/test_halving.py::test_a_promoted_stage_starts_from_the_promoted_configurations) ;;
  # The settings are checked where the configuration is loaded, test_config.py. A full run
  # takes hours on 2 cores: name a part, e.g. 'iishpo.optimizers.settings.*'.
  optimizers) mutate=(optimizers/__init__.py optimizers/base.py optimizers/genetic.py
      optimizers/hyperopt_search.py optimizers/settings.py optimizers/smac_search.py)
    tests=(tests/optimizers/test_optimizers.py tests/test_config.py) ;;
  *) echo "unknown module '$module': expected one of ranges, evidence, model, space, training, evaluation, summary, comparison, importance, ranking, stage, optimizers" >&2
     exit 2 ;;
esac

work=$root/mutants/$module
rm -rf "$work"
mkdir -p "$work"
cp -r "$root/src" "$root/tests" "$root/conf" "$root/pyproject.toml" "$work/"
{
  printf '\n[tool.mutmut]\nsource_paths = ["src/iishpo/"]\nalso_copy = ["conf"]\n'
  printf 'only_mutate = [%s]\n' "$(printf '"src/iishpo/%s", ' "${mutate[@]}")"
  printf 'pytest_add_cli_args_test_selection = [%s]\n' "$(printf '"%s", ' "${tests[@]}")"
} >>"$work/pyproject.toml"

cd "$work"
"$mutmut" run "$@"
"$mutmut" results
"$mutmut" export-cicd-stats >/dev/null && cat mutants/mutmut-cicd-stats.json
