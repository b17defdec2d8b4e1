#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through cargo fuzz) of kubeecr's four untrusted inputs:
# the annotations, an existing .dockerconfigjson, an AdmissionReview body, and a Secret as the
# refresher's watch delivers it. The checks are fuzz/checks.rs, which the test suite also runs
# over fuzz/corpus and fuzz/regressions on every run.
#
#   cargo install cargo-fuzz --locked     # once: the one install step
#   scripts/fuzz.sh [seconds] [target...]  # default: 60 s for each of the four
#
# Each target starts from its committed corpus (fuzz/corpus/<target>/, seeded from
# tests/fixtures when empty) and grows it; a crash input lands in fuzz/artifacts/<target>/ and
# belongs, once fixed, in fuzz/regressions/<target>/. cargo fuzz passes nightly-only flags; on
# this project's stable toolchain RUSTC_BOOTSTRAP=1 allows them (no sanitizer: coverage only).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
case $secs in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds] [target...]; $secs is not a number of seconds" >&2; exit 2 ;; esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(annotation dockerconfig_merge admission_review refresher_view)
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 2; }

# Seeds for an empty corpus, from the recorded AdmissionReviews and small hand-written cases.
seed() {
  local dir=fuzz/corpus/$1; mkdir -p "$dir"
  [ -z "$(ls -A "$dir")" ] || return 0
  case $1 in
    admission_review|refresher_view)
      for f in tests/fixtures/admission/*.json; do
        local part='["review"]'; [ "$1" = refresher_view ] && part='["review"]["request"]["object"]'
        python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); exec("o=v"+sys.argv[2]); sys.stdout.write(json.dumps(o))' "$f" "$part" \
          >"$dir/$(basename "$f" .json)"
      done ;;
    dockerconfig_merge)
      printf '%s' '{"auths":{"quay.io":{"auth":"dTpw"},"https://123456789012.dkr.ecr.us-west-2.amazonaws.com":{"auth":"x","identitytoken":"t"}},"credsStore":"ecr"}' >"$dir/seed-1"
      printf '%s' '{ "auths" : { } , "x" : [1.0e2, "\u00e9", null] }' >"$dir/seed-2" ;;
    annotation)
      printf '%s' '123456789012/us-west-2, 210987654321/eu-central-1' >"$dir/seed-1"
      printf '%s\n%s' '123456789012/us-east-1' 'standard,fips,dual-stack' >"$dir/seed-2" ;;
  esac
}

failed=0
echo "target executions seconds result" >fuzz/summary.txt
for t in "${targets[@]}"; do
  seed "$t"
  echo "==> $t for ${secs}s"
  log=fuzz/$t.log
  result=ok
  if ! (cd fuzz && cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -print_final_stats=1) >"$log" 2>&1; then
    failed=1; result=FAILED
    echo "$t FAILED: see $log (a build error, or a check that broke: the input is then in fuzz/artifacts/$t/)"
    grep -E 'panicked|SUMMARY|Test unit written' "$log" || true
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "$t: ${execs:-0} executions in ${secs} s, $result"
  echo "$t ${execs:-0} $secs $result" >>fuzz/summary.txt
done
exit "$failed"
