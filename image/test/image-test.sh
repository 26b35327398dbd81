#!/bin/bash
# ./build.sh image-test: the image test CI runs.
#
#  1. build the nuc image (./build.sh image --target nuc) and boot it in QEMU
#     (image_test.py: first boot, watchdog, clean poweroff, power cut);
#  2. build the pi4 and pi5 images and inspect their partition tables and files
#     (inspect_rpi.py), then boot the pi4 image's root in qemu-system-aarch64
#     (virt board, direct kernel boot: the Pi firmware cannot be emulated).
#     CLINICBOX_IMAGE_TEST_PI=0 skips step 2.
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

build() { # build TARGET -> prints the image path
    local t0 img
    t0=$(date +%s)
    img=$("$ROOT/image/build/build-image.sh" --target "$1" --out "$OUT" | tail -1)
    figure "$1 image build s: $(($(date +%s) - t0))"
    figure "$1 image size: $(du -h --apparent-size "$img" | cut -f1) disk, $(du -h "$img" | cut -f1) allocated, $(zstd -q -T0 -3 -c "$img" | wc -c | numfmt --to=iec) as .img.zst"
    echo "$img"
}

status=0
nuc=$(build nuc)
python3 "$ROOT/image/test/image_test.py" --image "$nuc" --work "$OUT/image-test-nuc" 2>&1 | tee -a "$LOG" || status=1

if [[ ${CLINICBOX_IMAGE_TEST_PI:-1} != 0 ]]; then
    for t in pi4 pi5; do
        img=$(build "$t") || { echo "FAIL $t image builds" | tee -a "$LOG"; status=1; continue; }
        echo "PASS $t image builds: $img" | tee -a "$LOG"
        python3 "$ROOT/image/test/inspect_rpi.py" --image "$img" --board "$t" 2>&1 | tee -a "$LOG" || status=1
        if [[ $t == pi4 ]]; then
            python3 "$ROOT/image/test/boot_arm64.py" --image "$img" --work "$OUT/image-test-$t" 2>&1 | tee -a "$LOG" || status=1
        fi
    done
else
    echo "NOTE pi4/pi5 images not built (CLINICBOX_IMAGE_TEST_PI=0)" | tee -a "$LOG"
fi

passed=$(grep -c '^PASS ' "$LOG" || true)
failed=$(grep -c '^FAIL ' "$LOG" || true)
echo
grep -E '^(FIGURE|NOTE) ' "$LOG" | sort -u
echo "image-test: $passed passed, $failed failed"
((failed == 0 && status == 0))
