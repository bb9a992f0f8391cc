#!/usr/bin/env bash
# Type-check the crates for macOS (x86_64-apple-darwin) and FreeBSD (x86_64-unknown-freebsd)
# from this Linux machine: the library, the `pagelog` binary and the examples, with and without
# the S3 feature. The log's file layer (log/src/fs/real.rs) and its dependencies
# (log/Cargo.toml) are the code with platform branches.
#
# This is `cargo check`, not a build: nothing is linked or run, because neither system's SDK
# can be installed here. The C dependencies (SQLite, zstd, aws-lc) need that SDK to compile, so
# their build scripts get a stand-in compiler that writes empty objects; only Rust code is
# checked.
#
# Installs each target's standard library with rustup. When rustup cannot reach its server,
# says so and skips that target: the check is skipped, not failed.
#
#   scripts/check_platforms.sh
set -euo pipefail
cd "$(dirname "$0")/.."

stand_in=$(mktemp -d)
trap 'rm -rf "$stand_in"' EXIT
# The stand-in C compiler: creates the output file it is asked for, empty. cc-rs also runs
# feature probes through it; they all "pass", which changes nothing for a type-check.
cat >"$stand_in/cc" <<'SCRIPT'
#!/bin/sh
out=""
while [ $# -gt 0 ]; do
  if [ "$1" = "-o" ]; then out="$2"; shift; fi
  shift
done
if [ -n "$out" ]; then : >"$out"; fi
exit 0
SCRIPT
printf '#!/bin/sh\nexit 0\n' >"$stand_in/ar"
chmod +x "$stand_in/cc" "$stand_in/ar"

for target in x86_64-apple-darwin x86_64-unknown-freebsd; do
  if ! rustup target list --installed | grep -qx "$target"; then
    if ! rustup target add "$target"; then
      echo "check_platforms: could not install the $target standard library; skipped"
      continue
    fi
  fi
  var=${target//-/_}
  export "CC_$var=$stand_in/cc" "CXX_$var=$stand_in/cc" "AR_$var=$stand_in/ar"
  echo "check_platforms: cargo check --target $target (S3 on)"
  cargo check --target "$target" --workspace --lib --bins --examples
  echo "check_platforms: cargo check --target $target (S3 off)"
  cargo check --target "$target" -p pagelog --no-default-features --lib --bins --examples
done
