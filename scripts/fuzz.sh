#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through cargo fuzz) of kubeecr's three untrusted inputs:
# the annotation, an existing .dockerconfigjson and an AdmissionReview body. Each target runs
# for SECONDS (default 60) from a corpus seeded with tests/fixtures; crashes land in
# fuzz/artifacts/<target>/. CI runs the same functions under proptest instead
# (tests/integration/fuzz_inputs.rs).
#
#   scripts/fuzz.sh [seconds] [target...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo fuzz passes nightly-only flags;
# on this project's stable toolchain RUSTC_BOOTSTRAP=1 allows them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(annotation dockerconfig_merge admission_review)
export RUSTC_BOOTSTRAP=1

seed() {
  local dir=fuzz/corpus/$1; mkdir -p "$dir"
  case $1 in
    admission_review)
      for f in tests/fixtures/admission/*.json; do
        python3 -c 'import json,sys; sys.stdout.write(json.dumps(json.load(open(sys.argv[1]))["review"]))' "$f" \
          >"$dir/$(basename "$f" .json)"
      done ;;
    dockerconfig_merge)
      printf '%s' '{"auths":{"quay.io":{"auth":"dTpw"},"https://123456789012.dkr.ecr.us-west-2.amazonaws.com":{"auth":"x","identitytoken":"t"}},"credsStore":"ecr"}' >"$dir/seed-1"
      printf '%s' '{ "auths" : { } , "x" : [1.0e2, "\u00e9", null] }' >"$dir/seed-2" ;;
    annotation)
      printf '%s' '123456789012/us-west-2, 210987654321/eu-central-1' >"$dir/seed-1"
      printf '%s' '123456789012/cn-north-1' >"$dir/seed-2" ;;
  esac
}

failed=0
for t in "${targets[@]}"; do
  seed "$t"
  echo "==> $t for ${secs}s"
  log=fuzz/$t.log
  if ! (cd fuzz && cargo fuzz run --sanitizer none "$t" -- -max_total_time="$secs" -max_len=65536 -print_final_stats=1) >"$log" 2>&1; then
    failed=1
    echo "$t FAILED; the input is in fuzz/artifacts/$t/, the log in $log"
  fi
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|panicked|SUMMARY|Test unit written' "$log" || true
done
exit "$failed"
