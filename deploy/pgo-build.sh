#!/usr/bin/env bash
# The static binary built with profile-guided optimisation (README, Deploy: "Profile-guided build"): more
# chat requests a second at less CPU, at the plain build's stack memory a waiting stream (the README has
# the figures). It is the build the Dockerfile ships. Three steps, all on this machine:
#   1. the static `dist` build (the Dockerfile's command) with LLVM's instrumentation;
#   2. training: `cargo bench --bench proxy` drives that binary over loopback with every scenario
#      (OpenAI chat, streams, a large body, Anthropic clients translated both ways, plain and
#      streamed, OpenAI clients translated to Bedrock Converse and ConverseStream, and to Gemini,
#      plain and streamed), 2 s each; the binary writes its counts when it exits;
#   3. the same build again, optimised with those counts: hot paths laid out together, cold paths
#      (errors, the schemas not trained) moved out of the way.
# Needs llvm-profdata of the compiler's LLVM version: `rustup component add llvm-tools`, or Debian's
# `llvm-<major>` (the script says which major). Output: target/x86_64-unknown-linux-gnu/dist/switchyard,
# where the plain static build puts it. Takes three release builds' time (about 6 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

triple=x86_64-unknown-linux-gnu
work="$PWD/target/pgo"
static="-C target-feature=+crt-static"

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=""
for candidate in "$(rustc --print sysroot)/lib/rustlib/$triple/bin/llvm-profdata" \
  "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata" llvm-profdata; do
  if command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" merge --version 2>/dev/null | grep -q "LLVM version $major\."; then
    profdata=$candidate
    break
  fi
done
if [ -z "$profdata" ]; then
  echo "pgo-build: no llvm-profdata for LLVM $major (rustc's): run 'rustup component add llvm-tools'" \
    "or install Debian's llvm-$major" >&2
  exit 1
fi

rm -rf "$work"
mkdir -p "$work/raw"

# Both builds are the static build's command (tests/static_binary.rs checks it) with one flag more.
echo "pgo-build: 1/3 instrumented build" >&2
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$static -C profile-generate=$work/default" \
  cargo build --locked --profile dist --target x86_64-unknown-linux-gnu --target-dir "$work/instrumented"

echo "pgo-build: 2/3 training" >&2
LLVM_PROFILE_FILE="$work/raw/switchyard-%p.profraw" \
  BENCH_BINARY="$work/instrumented/$triple/dist/switchyard" BENCH_NO_NGINX=1 BENCH_ROUNDS=1 BENCH_SECONDS=2 \
  cargo bench --locked --bench proxy >&2
if ! compgen -G "$work/raw/switchyard-*.profraw" >/dev/null; then
  echo "pgo-build: the training wrote no profile" >&2
  exit 1
fi
"$profdata" merge -o "$work/switchyard.profdata" "$work"/raw/switchyard-*.profraw

echo "pgo-build: 3/3 optimised build" >&2
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$static -C profile-use=$work/switchyard.profdata" \
  cargo build --locked --profile dist --target x86_64-unknown-linux-gnu
echo "target/$triple/dist/switchyard"
