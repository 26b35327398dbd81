#!/usr/bin/env bash
# One entry point for every check: ./build.sh <command>. CI calls exactly these.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

die() { echo "build.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is missing: $2"; }
need_rust() { need cargo "install Rust (https://rustup.rs), then run this again"; }

usage() {
  cat <<USAGE
usage: ./build.sh <command>
  build        build the workspace (debug)
  test         run the whole test suite (unit, integration, end-to-end)
  run          run a demo box: ./demo-data, demo users and metadata, http://127.0.0.1:8080
  bench        run the benchmarks (release build) and print their figures
  lint         cargo fmt --check and cargo clippy
  release      build release binaries (profile dist) for the image
  image --target nuc|pi4|pi5
               build the disk image (root); prints the image path last
  bundle --target nuc|pi4|pi5 [--image IMG] [--repo DIR] [--keys DIR]
               turn a built image into a signed update in the TUF repository DIR
               (default ./updates, keys ./update-keys); prints the bundle's path last
  image-test   build the nuc image and boot it in QEMU (checks: image/README.md);
               build the pi4/pi5 images and inspect them (CLINICBOX_IMAGE_TEST_PI=0 skips)
USAGE
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    need_rust
    cargo build --workspace --locked "$@"
    ;;
  test)
    need_rust
    # The end-to-end tests start the real binary, so build it first.
    cargo build --workspace --locked --bins
    # Tests skipped for a missing tool or root say so here, after cargo's own summary.
    export CLINICBOX_TEST_SKIPS="$TARGET/test-skips.txt"
    rm -f "$CLINICBOX_TEST_SKIPS"
    rc=0
    cargo test --workspace --locked --no-fail-fast "$@" || rc=$?
    if [ -s "$CLINICBOX_TEST_SKIPS" ]; then
      echo "SKIPPED tests ($(wc -l <"$CLINICBOX_TEST_SKIPS")): they passed without running"
      sed 's/^/  /' "$CLINICBOX_TEST_SKIPS"
    fi
    exit "$rc"
    ;;
  run)
    need_rust
    cargo build --locked -p clinicbox
    exec "$TARGET/debug/clinicbox" serve --demo --data-dir "$ROOT/demo-data" "$@"
    ;;
  bench)
    need_rust
    # Every benchmark prints its report, and its headline figures as FIGURE lines
    # (tests/bench/src/figures.rs); the table at the end gathers them with their ratios.
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    failed=()
    # A benchmark that fails is named at the end; the others still run and the table is printed.
    each() { "$@" || { echo "FAILED: $*"; failed+=("$*"); }; }
    {
      each cargo run --release --locked -p clinicbox-bench -- store "$@"
      # A tablet's login + full metadata sync of the demo package over loopback (clinicbox-api).
      each cargo test --release --locked -p clinicbox-api --test sync_bench -- --ignored --nocapture
      # A month's data set (500 values) uploaded and downloaded through the aggregate API.
      each cargo run --release --locked -p clinicbox-bench -- aggregate
      # Tracker: one POST of 200 TEs + 200 enrollments + 1,000 events vs the store's raw write,
      # download of 500 TEs, search at 10k TEs, peak RSS.
      each cargo run --release --locked -p clinicbox-bench -- tracker
      # What one logged-in tablet can cost (a 12 MB value, stored reports, 300,000 empty
      # objects) next to an ordinary upload: answer size, store growth, memory.
      each cargo run --release --locked -p clinicbox-bench -- exhaustion
      # The uplink on a bad LTE link (800 ms, 80 kbit/s, 20 % loss) vs the Android app's way of
      # sending the same records: bytes per event and per data value, push time, peak RSS.
      each cargo build --release --locked -p clinicbox -p clinicbox-tests --bins
      each cargo run --release --locked -p clinicbox-bench -- uplink
      # The uplink's pull on the same link: first metadata pull, a quiet round, a change at
      # national until a tablet sees it.
      each cargo run --release --locked -p clinicbox-bench -- pull
      # A backup and a restore of 100,000 patients next to copying the store file.
      each cargo run --release --locked -p clinicbox-bench -- backup
      # The store's memory after reading 100,000 patients: the box's page-cache bound vs the
      # database's default.
      each cargo run --release --locked -p clinicbox-bench -- memory
      # The tracker catalog at start on 100,000 patients: from its saved copy and the changes
      # after it vs rebuilt from every record.
      each cargo run --release --locked -p clinicbox-bench -- restart
      # A tablet's requests on 1,000 and on 100,000 patients: "anything new?", a page of a
      # download, the full download, the restart and the store's bytes per patient.
      each cargo run --release --locked -p clinicbox-bench -- scale
      # One tablet and twenty uploading at once, on this disk and with the store's syncs as
      # slow as an SD card's (10 ms): patients/s, latency, writes per commit.
      each cargo run --release --locked -p clinicbox-bench -- tablets
      # The real daemon's memory holding 100,000 patients, after start and after twenty tablets
      # at once, next to an empty demo box's.
      each cargo run --release --locked -p clinicbox-bench -- serve-memory
      # Re-announcing the box after a LAN address change vs avahi-daemon (needs root and
      # network namespaces; says SKIPPED otherwise).
      each cargo bench --locked -p clinicbox-discovery --bench reannounce
    } > >(tee "$log") 2>&1
    wait $!
    cargo run --release --locked -q -p clinicbox-bench -- table "$log"
    if ((${#failed[@]})); then
      printf 'failed: %s\n' "${failed[@]}" >&2
      exit 1
    fi
    ;;
  lint)
    need_rust
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    ;;
  release)
    need_rust
    cargo build --profile dist --locked -p clinicbox "$@"
    echo "$TARGET/dist/clinicbox"
    ;;
  image)
    need_rust
    exec "$ROOT/image/build/build-image.sh" "$@"
    ;;
  bundle)
    need_rust
    exec "$ROOT/image/build/bundle.sh" "$@"
    ;;
  image-test)
    need_rust
    exec "$ROOT/image/test/image-test.sh" "$@"
    ;;
  ""|-h|--help|help)
    usage
    ;;
  *)
    usage >&2
    die "unknown command '$cmd'"
    ;;
esac
