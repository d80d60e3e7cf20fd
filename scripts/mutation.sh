#!/usr/bin/env bash
# Mutation testing of the request path (issue 19 point 11) with mutmut, as configured in
# [tool.mutmut] in pyproject.toml. Usage:
#
#   scripts/mutation.sh                        # every module in only_mutate (hours on 2 cores)
#   scripts/mutation.sh identity dispatch      # some modules: starmodel_asgi/<name>.py, stores.<name>
#
# Needs PostgreSQL and Redis as the test suite does (STARMODEL_TEST_POSTGRES_URL, STARMODEL_TEST_REDIS_URL;
# defaults below: the local services, Redis db 9). Results stay in mutants/ (`mutmut results`,
# `mutmut show NAME`); scripts/mutant_check.py reruns chosen tests against chosen mutants.
#
# Measured on the 2-core machine, 2 children, beside other test suites: identity 25 min (228
# mutants), dispatch 29 min (546), unit 50 min (348); endpoints (841) judged 550 in 100 min beside
# four other jobs before it was stopped; stores.sql (904) judged 560 in 72 min with 1 child beside
# three other helpers' jobs (load 6-9) before it was stopped; expect hours for the rest, on a quiet
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/mutmut ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -e ".[mutation]"
fi
# shellcheck disable=SC1091
. .venv/bin/activate

export STARMODEL_TEST_POSTGRES_URL="${STARMODEL_TEST_POSTGRES_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}"
export STARMODEL_TEST_REDIS_URL="${STARMODEL_TEST_REDIS_URL:-redis://127.0.0.1:6379/9}"
unset STARMODEL_TEST_CHROMIUM  # no browser tests in a mutation run

patterns=()
for module in "$@"; do
  patterns+=("starmodel_asgi.${module}.*")
done

# a fresh run: mutmut keeps verdicts in mutants/ and would otherwise reuse them
rm -rf mutants
nice -n 15 mutmut run --max-children "${MUTATION_CHILDREN:-2}" "${patterns[@]}"
mutmut results --all true | awk -F': ' '{split($1, name, "."); print name[2] (name[2] == "stores" ? "." name[3] : ""), $2}' \
  | sort | uniq -c
