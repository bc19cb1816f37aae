#!/usr/bin/env bash
# The mutation score of the formula modules (scope and tests: [tool.mutmut] in pyproject.toml).
# Not part of CI: it takes tens of minutes of CPU. Results: docs/mutation-testing.md.
#   tools/mutation.sh                          # every mutant
#   tools/mutation.sh 'ganpipe.gan.losses*'    # some, by mutant name pattern
# Mutants are written to mutants/ (git-ignored); `mutmut show <name>` prints one as a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 CI=1
nice -n 10 mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@"
mutmut results --all true
