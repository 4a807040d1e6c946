#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), on stable Rust without sanitizers,
# from its committed corpus (fuzz/corpus/TARGET), then minimises the corpus (cargo fuzz cmin).
# Prints one line per target: executions, corpus size, and whether it crashed (a crash's input
# is in fuzz/artifacts/TARGET; fix it and keep it as a regression test). Exits non-zero on a
# crash. Installs cargo-fuzz if it is missing.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -s none
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
status=0
mkdir -p target/logs
printf '| target | executions | seconds | corpus files | result |\n| --- | --- | --- | --- | --- |\n' > target/logs/summary.md
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="target/logs/$t.log"
  result=ok
  if ! cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    result="CRASH (fuzz/artifacts/$t, fuzz/$log)"
    status=1
  fi
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  cargo fuzz cmin -s none "$t" "corpus/$t" >"target/logs/$t.cmin.log" 2>&1 || true
  files=$(find "corpus/$t" -type f | wc -l)
  echo "$t: ${execs:-?} executions in $secs s, corpus $files files, $result"
  printf '| `%s` | %s | %s | %s | %s |\n' "$t" "${execs:-?}" "$secs" "$files" "$result" >> target/logs/summary.md
done
echo "summary: fuzz/target/logs/summary.md"
exit $status
