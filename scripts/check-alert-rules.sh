#!/usr/bin/env bash
# Checks the example Prometheus alert rules of docs/operations.md ("Operating dlb": the ```yaml block
# that starts with `groups:`) with `promtool check rules` (Debian's prometheus package;
# scripts/bootstrap.sh installs it).
#
# Usage (from any directory): bash scripts/check-alert-rules.sh
# Exits non-zero when the block is missing or promtool finds a problem.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v promtool >/dev/null || {
    echo "check-alert-rules: promtool not found (bash scripts/bootstrap.sh installs it)" >&2
    exit 1
}
rules=$(mktemp --suffix=.yml)
trap 'rm -f "$rules"' EXIT
awk '/^```yaml$/ { grab = 1; next } /^```$/ { if (grab) exit } grab' docs/operations.md >"$rules"
grep -q '^groups:' "$rules" || {
    echo "check-alert-rules: docs/operations.md has no \`\`\`yaml block of rules (groups:)" >&2
    exit 1
}
promtool check rules "$rules"
