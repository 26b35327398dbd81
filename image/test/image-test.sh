#!/bin/bash
# ./build.sh image-test: the image test CI runs.
#
#  1. build the nuc image (./build.sh image --target nuc) and boot it in QEMU
#     (image_test.py: first boot, watchdog, clean poweroff, power cut, the
#     uplink sending to a stand-in national through the USB dongle wan0);
#  2. build the pi4 and pi5 images and inspect their partition tables and files
#     (inspect_rpi.py), then boot the pi4 image's root in qemu-system-aarch64
#     (virt board, direct kernel boot: the Pi firmware cannot be emulated).
#     CLINICBOX_IMAGE_TEST_PI=0 skips step 2.
#     CLINICBOX_IMAGE_TEST_BUDGET_S=N (CI): the whole test may take N seconds;
#     a Pi stage that would not fit in what is left is not started, and the
#     summary says which (a NOTE, not a pass).
# Prints FIGURE lines (build time, image size, boot-to-READY) and ends with
# "image-test: N passed, N failed". Needs root (debootstrap, loop devices);
# outside CI, without root it prints SKIPPED and exits 0.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${CLINICBOX_IMAGE_OUT:-$ROOT/image/out}
LOG=$OUT/image-test.log
cd "$ROOT"

if [[ $(id -u) != 0 ]]; then
    [[ ${CI:-} == true ]] && { echo "image-test: needs root in CI" >&2; exit 1; }
    echo "SKIPPED: image-test needs root (debootstrap, chroot, loop devices); run: sudo ./build.sh image-test"
    exit 0
fi
missing=()
for t in qemu-system-x86_64 swtpm debootstrap mkfs.vfat mcopy sfdisk partx zstd python3; do
    command -v "$t" >/dev/null || missing+=("$t")
done
[[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ]] || missing+=(ovmf)
if ((${#missing[@]})); then
    echo "image-test: missing ${missing[*]}: apt-get install debootstrap qemu-system-x86 ovmf swtpm swtpm-tools dosfstools mtools fdisk zstd (see image/README.md)" >&2
    exit 1
fi

mkdir -p "$OUT"
: >"$LOG"
figure() { echo "FIGURE $*" | tee -a "$LOG" >&2; }

build() { # build TARGET -> prints the image path; fails (with the build's last line) when there is none
    local t0 img out rc=0
    t0=$(date +%s)
    out=$("$ROOT/image/build/build-image.sh" --target "$1" --out "$OUT") || rc=$?
    img=$(tail -1 <<<"$out")
    if ((rc != 0)) || [[ ! -f $img ]]; then
        echo "FAIL $1 image builds: exit $rc, no image; the build's last line is above" | tee -a "$LOG" >&2
        return 1
    fi
    echo "PASS $1 image builds: $img" | tee -a "$LOG" >&2
    figure "$1 image build s: $(($(date +%s) - t0))"
    local drift
    drift=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("lock_drift", [])))' "${img%.img}.manifest.json")
    ((drift == 0)) || echo "NOTE $1 image: $drift packages newer than packages/*.lock (manifest lock_drift): refresh the lock on purpose" | tee -a "$LOG" >&2
    figure "$1 image size: $(du -h --apparent-size "$img" | cut -f1) disk, $(du -h "$img" | cut -f1) allocated, $(zstd -q -T0 -3 -c "$img" | wc -c | numfmt --to=iec) as .img.zst"
    echo "$img"
}

# A build whose package stage fails stops there: non-zero exit, the reason as the
# last line, no image. Forced with a package Debian does not have; it costs one
# amd64 debootstrap (nothing of a failed build is cached).
forced_failure() {
    local out=$OUT/forced-failure rc=0 last
    rm -rf "$out"
    last=$(CLINICBOX_IMAGE_EXTRA_PACKAGES=clinicbox-no-such-package \
        "$ROOT/image/build/build-image.sh" --target nuc --out "$out" 2>&1 >/dev/null | tail -1) || rc=$?
    echo "forced package-stage failure, last line: $last" | tee -a "$LOG" >&2
    if ((rc != 0)) && [[ $last == *"package stage failed"*"clinicbox-no-such-package"* ]] &&
        ! compgen -G "$out/*.img" >/dev/null; then
        echo "PASS a failed package stage stops the build with its reason last and no image" | tee -a "$LOG"
    else
        echo "FAIL a failed package stage stops the build with its reason last and no image (exit $rc)" | tee -a "$LOG"
    fi
}

# Conservative stage costs on 2 cores under TCG, from measured runs (image/README.md):
# the arm64 Debian root under qemu-user is the big one, and is cached once built.
BUDGET=${CLINICBOX_IMAGE_TEST_BUDGET_S:-0}
START=$SECONDS
fits() { # fits SECONDS: is there that much left of the budget?
    ((BUDGET == 0 || BUDGET - (SECONDS - START) >= $1))
}
arm64_root_cached() {
    compgen -G "${CLINICBOX_IMAGE_CACHE:-/var/cache/clinicbox/image}/rootfs-arm64-*.tar.zst" >/dev/null
}

# The nuc boot's uplink check sends to a stand-in national DHIS2 on this host
# (tests/src/bin/national_standin.rs), which the guest reaches through socat.
standin=
if cargo build --locked -q -p clinicbox-tests --bin national_standin >>"$LOG" 2>&1; then
    standin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/national_standin
else
    echo "FAIL the national stand-in builds (cargo build -p clinicbox-tests --bin national_standin)" | tee -a "$LOG"
fi
command -v socat >/dev/null || echo "NOTE socat missing: the uplink push on the image is not checked (apt-get install socat)" | tee -a "$LOG"

# Updates: the nuc image trusts a repository made here (its root metadata goes into the
# image), and two more images of the same root at the next two patch versions become its
# releases: one good, one whose clinicbox fails (the rollback).
UPD=$OUT/image-test-updates
rm -rf "$UPD"
update_args=()
if cargo build --locked -q -p clinicbox-update --bin clinicbox-publish >>"$LOG" 2>&1; then
    publish=${CARGO_TARGET_DIR:-$ROOT/target}/debug/clinicbox-publish
    CLINICBOX_UPDATE_ROOT=$("$publish" init --repo "$UPD/repo" --keys "$UPD/keys") && export CLINICBOX_UPDATE_ROOT
else
    echo "FAIL clinicbox-publish builds (cargo build -p clinicbox-update --bin clinicbox-publish)" | tee -a "$LOG"
fi
release_images() { # the good and the broken release images, as GOOD,BAD
    local version major minor patch bin good bad
    version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
    IFS=. read -r major minor patch <<<"${version%%-*}"
    bin=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/dist/clinicbox
    printf '#!/bin/sh\necho "clinicbox: broken on purpose by the image test" >&2\nexit 1\n' >"$UPD/broken-clinicbox"
    chmod 0755 "$UPD/broken-clinicbox"
    good=$(CLINICBOX_IMAGE_VERSION=$major.$minor.$((patch + 1)) CLINICBOX_BIN=$bin \
        "$ROOT/image/build/build-image.sh" --target nuc --out "$UPD/images" | tail -1) || return 1
    bad=$(CLINICBOX_IMAGE_VERSION=$major.$minor.$((patch + 2)) CLINICBOX_BIN=$UPD/broken-clinicbox \
        "$ROOT/image/build/build-image.sh" --target nuc --out "$UPD/images" | tail -1) || return 1
    echo "$good,$bad"
}

status=0
if nuc=$(build nuc); then
    if [[ -n ${CLINICBOX_UPDATE_ROOT:-} ]] && releases=$(release_images 2>>"$LOG"); then
        echo "PASS release images for the update test build (the next two patch versions)" | tee -a "$LOG"
        update_args=(--update-repo "$UPD/repo" --update-keys "$UPD/keys" --update-images "$releases")
    else
        echo "FAIL release images for the update test build (see $LOG)" | tee -a "$LOG"
    fi
    CLINICBOX_NATIONAL_STANDIN=$standin \
        python3 "$ROOT/image/test/image_test.py" --image "$nuc" --work "$OUT/image-test-nuc" "${update_args[@]}" 2>&1 | tee -a "$LOG" || status=1
else
    status=1
fi
if fits 400; then
    forced_failure
else
    echo "NOTE forced package-stage failure not run: $((BUDGET - (SECONDS - START))) s left of the ${BUDGET} s budget, needs ~400 s" | tee -a "$LOG"
fi

# A Pi release as a release manager makes it: boot-a's files but cmdline.txt, the command
# line without the slot's root and name, signed with its chunk index (no Pi boots here).
pi_bundle() {
    local img=$1 bundle verdict
    bundle=$("$ROOT/image/build/bundle.sh" --target pi4 --image "$img" --repo "$UPD/repo" \
        --keys "$UPD/keys" --out "$OUT/image-test-pi4" 2>>"$LOG" | tail -1) || {
        echo "FAIL pi4: ./build.sh bundle --target pi4 makes a release" | tee -a "$LOG"
        return 1
    }
    verdict=$(tar -xOf "$bundle" bundle.json | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
names = {f["name"] for f in m["boot"]}
need = {"config.txt", "vmlinuz", "initrd.img", "start4.elf", "bcm2711-rpi-4-b.dtb"}
chunks = any(f.endswith("clinicbox-pi4-%s.chunks" % m["version"]) for f in os.listdir(sys.argv[1]))
ok = m["board"] == "pi4" and need <= names and "cmdline.txt" not in names and chunks     and "root=" not in m["cmdline"] and "clinicbox.slot" not in m["cmdline"] and "rootwait" in m["cmdline"]
print(("PASS" if ok else "FAIL") + " pi4: ./build.sh bundle --target pi4 carries boot-a (%d files, no cmdline.txt), "
      "the command line without root and slot (%s), and its chunk index" % (len(names), m["cmdline"]))
' "$UPD/repo/targets")
    echo "$verdict" | tee -a "$LOG"
    [[ $verdict == PASS* ]]
}

# What cross-building the Pi images needs beyond the nuc's: if this machine lacks it, say so.
pi_missing=()
[[ -d $(rustc --print target-libdir --target aarch64-unknown-linux-gnu 2>/dev/null) ]] ||
    pi_missing+=("rust target aarch64-unknown-linux-gnu (rustup target add aarch64-unknown-linux-gnu)")
for t in aarch64-linux-gnu-gcc qemu-aarch64-static qemu-system-aarch64; do
    command -v "$t" >/dev/null || pi_missing+=("$t")
done

if [[ ${CLINICBOX_IMAGE_TEST_PI:-1} != 0 ]] && ((${#pi_missing[@]})); then
    echo "NOTE pi4/pi5 images not built: this machine lacks ${pi_missing[*]}" | tee -a "$LOG"
elif [[ ${CLINICBOX_IMAGE_TEST_PI:-1} != 0 ]]; then
    for t in pi4 pi5; do
        need=300
        arm64_root_cached || need=1500
        if ! fits "$need"; then
            echo "NOTE $t image not built: $((BUDGET - (SECONDS - START))) s left of the ${BUDGET} s budget, needs ~${need} s" | tee -a "$LOG"
            continue
        fi
        img=$(build "$t") || { status=1; continue; }
        python3 "$ROOT/image/test/inspect_rpi.py" --image "$img" --board "$t" 2>&1 | tee -a "$LOG" || status=1
        if [[ $t == pi4 ]] && fits 180; then
            pi_bundle "$img" || status=1
        fi
        if [[ $t == pi4 ]] && ! fits 600; then
            echo "NOTE pi4 root not booted on arm64: $((BUDGET - (SECONDS - START))) s left of the ${BUDGET} s budget, needs ~600 s" | tee -a "$LOG"
        elif [[ $t == pi4 ]]; then
            python3 "$ROOT/image/test/boot_arm64.py" --image "$img" --work "$OUT/image-test-$t" 2>&1 | tee -a "$LOG" || status=1
        fi
    done
else
    echo "NOTE pi4/pi5 images not built (CLINICBOX_IMAGE_TEST_PI=0)" | tee -a "$LOG"
fi

passed=$(grep -c '^PASS ' "$LOG" || true)
failed=$(grep -c '^FAIL ' "$LOG" || true)
echo
grep -E '^(FIGURE|NOTE|FAIL) ' "$LOG" | sort -u
echo "image-test: $passed passed, $failed failed"
((failed == 0 && status == 0))
