#!/bin/bash
# Build a ClinicBox disk image for one board.
#
#   image/build/build-image.sh --target nuc|pi4|pi5 [--out DIR]
#
# Steps: release build of the `clinicbox` binary for the board's architecture,
# Debian root from cache or debootstrap (rootfs.sh), ClinicBox customisation
# (customise.sh), then the board's disk layout (assemble-nuc.sh or
# assemble-rpi.sh). The last line printed is the image's path; a manifest
# (<image>.manifest.json) and the package list sit next to it.
#
# Needs root (debootstrap, chroot). Env:
#   CLINICBOX_BIN=FILE                use this binary instead of building one
#   CLINICBOX_SSH_AUTHORIZED_KEYS=F   enable SSH for these public keys
#   CLINICBOX_IMAGE_CACHE=DIR         rootfs cache (default /var/cache/clinicbox/image)
#   and those of rootfs.sh (mirror, snapshot, pins).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE_DIR=$(dirname "$HERE")
REPO=$(dirname "$IMAGE_DIR")
TARGET=
OUT_DIR=$IMAGE_DIR/out
while (($#)); do
    case $1 in
    --target) TARGET=${2:?}; shift 2 ;;
    --target=*) TARGET=${1#*=}; shift ;;
    --out) OUT_DIR=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
BOARD_FILE=$REPO/hw/$TARGET.toml
[[ -n $TARGET && -f $BOARD_FILE ]] || { echo "usage: $0 --target nuc|pi4|pi5 (no hw/$TARGET.toml)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "building an image needs root (debootstrap, chroot)" >&2; exit 1; }

log() { printf '[image %s] %s\n' "$TARGET" "$*" >&2; }
t0=$(date +%s)
stamp() { log "$1 ($(($(date +%s) - t0)) s)"; }
STAGE_LOG=$(mktemp "${TMPDIR:-/var/tmp}/clinicbox-image-stage.XXXXXX")
WORK= img=
# A failed build leaves no image behind that could pass for a finished one.
trap 'rc=$?; rm -rf "$STAGE_LOG" ${WORK:+"$WORK"}; ((rc == 0)) || rm -f ${img:+"$img"}' EXIT
# stage NAME CMD...: run one step of the build. A step that fails stops the build,
# and the last line printed names the step and its own last words (the reason).
stage() {
    local name=$1 rc=0
    shift
    # stdout stays stdout; stderr goes to the terminal and, for the reason, to a file.
    { "$@" 2>&1 1>&3 3>&- | tee "$STAGE_LOG" >&2; } 3>&1 || rc=$?
    if ((rc != 0)); then
        log "FAILED in $name (exit $rc): $(grep -v '^[[:space:]]*$' "$STAGE_LOG" | tail -1)"
        exit "$rc"
    fi
}

profile=$("$HERE/profile.py" "$BOARD_FILE")
eval "$profile"
export $(printf '%s\n' "$profile" | cut -d= -f1)
export BOARD_FILE IMAGE_DIR

for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy sfdisk zstd systemd-repart; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install debootstrap e2fsprogs dosfstools mtools fdisk zstd systemd-container (see image/README.md)" >&2; exit 1; }
done

# --- version ------------------------------------------------------------------
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml")
commit=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo uncommitted)
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null) ]]; then commit=$commit-dirty; fi
export IMAGE_VERSION=${CLINICBOX_IMAGE_VERSION:-$version} IMAGE_COMMIT=$commit
log "ClinicBox $IMAGE_VERSION ($IMAGE_COMMIT) for $HW_BOARD_DESCRIPTION"

# --- the binary -----------------------------------------------------------------
if [[ -z ${CLINICBOX_BIN:-} ]]; then
    # Size-optimised release profile (fat LTO, stripped), cross-compiled for arm64.
    stage "the release build" cargo build --manifest-path "$REPO/Cargo.toml" --locked --profile dist -p clinicbox --target "$HW_BOARD_RUST_TARGET"
    CLINICBOX_BIN=${CARGO_TARGET_DIR:-$REPO/target}/$HW_BOARD_RUST_TARGET/dist/clinicbox
    stamp "built $CLINICBOX_BIN ($(du -h "$CLINICBOX_BIN" | cut -f1))"
fi
[[ -x $CLINICBOX_BIN ]] || { log "FAILED: no binary at $CLINICBOX_BIN"; exit 1; }
export CLINICBOX_BIN

# --- root ----------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/clinicbox-image-$TARGET.XXXXXX")
stage "the Debian root (rootfs.sh $HW_BOARD_ARCH)" "$HERE/rootfs.sh" "$HW_BOARD_ARCH" "$WORK/rootfs.tar.zst"
stamp "Debian root ready"
mkdir "$WORK/root"
zstd -dc "$WORK/rootfs.tar.zst" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$WORK/root" -xf -
rm -f "$WORK/rootfs.tar.zst"

# Features the binary has decide which units go in (the image packages what
# this commit builds).
binary_has() { # binary_has SUBCOMMAND: does `clinicbox SUBCOMMAND --help` work?
    if [[ $HW_BOARD_ARCH == "$(dpkg --print-architecture)" ]]; then
        "$CLINICBOX_BIN" "$1" --help >/dev/null 2>&1
    else
        QEMU_LD_PREFIX=$WORK/root "qemu-${HW_BOARD_ARCH/arm64/aarch64}-static" "$CLINICBOX_BIN" "$1" --help >/dev/null 2>&1
    fi
}
export CLINICBOX_HAS_POWER=0
if binary_has power; then CLINICBOX_HAS_POWER=1; else log "WARNING: this clinicbox has no 'power' subcommand yet: clinicbox-power.service is left out"; fi

stage "customising the root (customise.sh)" "$HERE/customise.sh" "$WORK/root"
stamp "root customised"

# --- disk ----------------------------------------------------------------------
mkdir -p "$OUT_DIR"
name=clinicbox-$TARGET-$IMAGE_VERSION
img=$OUT_DIR/$name.img
rm -f "$img"
case $HW_IMAGE_BOOT in
systemd-boot) stage "assembling the disk (assemble-nuc.sh)" "$HERE/assemble-nuc.sh" "$WORK/root" "$WORK" "$img" ;;
rpi-tryboot) stage "assembling the disk (assemble-rpi.sh)" "$HERE/assemble-rpi.sh" "$WORK/root" "$WORK" "$img" ;;
esac
# Zero runs (empty slots, unused space copied by repart) become holes again.
fallocate --dig-holes "$img"
cp "$WORK/root/usr/share/clinicbox/manifest.json" "$OUT_DIR/$name.manifest.json"
stamp "image ready: $(du -h --apparent-size "$img" | cut -f1) (sparse, $(du -h "$img" | cut -f1) allocated)"
echo "$img"
