#!/usr/bin/env bash
# record.sh SECTION REPORT COMMAND: replaces the SECTION block of BENCHMARKS.md (between
# `<!-- SECTION:start -->` and `<!-- SECTION:end -->`) with REPORT, dated, with the command.
set -euo pipefail
cd "$(dirname "$0")/../.."
section=$1 report=$2 command=$3
file=BENCHMARKS.md
start="<!-- $section:start -->" end="<!-- $section:end -->"
block=$(printf '%s\n_Measured %s on %s (%s) with `%s`, commit %s._\n\n%s\n%s\n' \
  "$start" "$(date -u +%Y-%m-%dT%H:%MZ)" "$(uname -n)" "$(nproc) cores" "$command" \
  "$(git rev-parse --short HEAD)" "$(cat "$report")" "$end")
python3 - "$file" "$start" "$end" "$block" <<'PY'
import sys
path, start, end, block = sys.argv[1:]
text = open(path).read()
if start in text and end in text:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    text = head + block + tail
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
echo "recorded $section in $file"
