#!/usr/bin/env bash
# CI: the README as a new user runs it, with the base install only (no extras): in a fresh copy of
# the repository, the Quick start's demo command (it makes .venv with `pip install -e .`), then the
# Usage block line by line in that venv, verbatim (comments stripped), in order; any error fails.
# `--print` prints the Usage block's commands as they are run (tests/test_readme.py compares).
set -euo pipefail
cd "$(dirname "$0")/.."

extract() {  # the first ```bash block under "## $1" that contains $2, one command a line
  python3 - "$1" "$2" <<'EOF'
import re
import sys

heading, word = sys.argv[1:]
readme = open("README.md", encoding="utf-8").read()
start = readme.index(f"\n## {heading}")
end = readme.find("\n## ", start + 1)
for block in re.findall(r"^```bash\n(.*?)^```", readme[start:end if end >= 0 else None],
                        flags=re.S | re.M):
    if word in block:
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                print(line)
        break
else:
    sys.exit(f"README.md: no bash block containing {word!r} under '## {heading}'")
EOF
}

if [ "${1:-}" = "--print" ]; then extract "Usage" "collapselab"; exit 0; fi

mapfile -t quick < <(extract "Quick start" "collapselab demo")
mapfile -t usage < <(extract "Usage" "collapselab")
[ "${#quick[@]}" -gt 0 ] && [ "${#usage[@]}" -gt 0 ]

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/collapselab"
# a fresh clone: the repository's files as this working tree has them; no venv, no runs
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$work/collapselab"
else
  tar --exclude=./.venv --exclude=./runs -cf - . | tar -xf - -C "$work/collapselab"
fi
cd "$work/collapselab"
export PIP_DISABLE_PIP_VERSION_CHECK=1
step() {  # run one README line; say how long it took
  local start=$SECONDS
  echo "+ $1" >&2
  bash -euo pipefail -c "$1" </dev/null
  echo "  ($((SECONDS - start)) s)" >&2
}
for cmd in "${quick[@]}"; do step "$cmd"; done
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
usage_start=$SECONDS
for cmd in "${usage[@]}"; do step "$cmd"; done
echo "README Quick start demo and Usage block: all ${#usage[@]} Usage commands ran" \
  "(Usage block $((SECONDS - usage_start)) s, in all ${SECONDS} s)" >&2
