#!/bin/bash
# Turn a built disk image into a signed update and publish it.
#
#   image/build/bundle.sh --target nuc|pi4|pi5 [--image IMG] [--repo DIR] [--keys DIR] [--out DIR]
#
# Takes slot A of IMG (default image/out/clinicbox-<target>-<version>.img, built
# first when missing): its root file system, shrunk to what it holds, and its
# boot files (NUC: kernel and initrd from the ESP; Pi: its boot partition); packs them into a bundle (clinicbox-publish
# bundle: appliance/update/src/bundle.rs) and signs it into the TUF repository
# in DIR (clinicbox-publish add) with the online keys in --keys. The repository
# must exist (clinicbox-publish init, whose root the image ships: build the
# image with CLINICBOX_UPDATE_ROOT=<repo>/metadata/1.root.json). Prints the
# bundle's path last. Serve the repository folder as the update mirror
# ([uplink.update] mirror_url) or copy it to a USB stick as clinicbox-update/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(dirname "$(dirname "$HERE")")
TARGET= IMG= REPO=$REPO_ROOT/updates KEYS=$REPO_ROOT/update-keys OUT=$REPO_ROOT/image/out
while (($#)); do
    case $1 in
    --target) TARGET=${2:?}; shift 2 ;;
    --image) IMG=${2:?}; shift 2 ;;
    --repo) REPO=${2:?}; shift 2 ;;
    --keys) KEYS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
log() { printf '[bundle %s] %s\n' "$TARGET" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
[[ -f $REPO_ROOT/hw/$TARGET.toml ]] || die "usage: $0 --target nuc|pi4|pi5 (no hw/$TARGET.toml)"
[[ -f $REPO/metadata/1.root.json ]] || die "no repository in $REPO: clinicbox-publish init --repo $REPO --keys $KEYS"
for tool in sfdisk mcopy e2fsck resize2fs dumpe2fs debugfs; do
    command -v "$tool" >/dev/null || die "missing $tool: apt-get install fdisk mtools e2fsprogs"
done

if [[ -z $IMG ]]; then
    version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")
    IMG=$OUT/clinicbox-$TARGET-${CLINICBOX_IMAGE_VERSION:-$version}.img
    [[ -f $IMG ]] || IMG=$("$HERE/build-image.sh" --target "$TARGET" --out "$OUT" | tail -1)
fi
[[ -f $IMG ]] || die "no image at $IMG"

cargo build --manifest-path "$REPO_ROOT/Cargo.toml" --locked -q -p clinicbox-update --bin clinicbox-publish
PUBLISH=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/clinicbox-publish

W=$(mktemp -d "${TMPDIR:-/var/tmp}/clinicbox-bundle.XXXXXX")
trap 'rm -rf "$W"' EXIT

# partition N: start and size in bytes
part() { sfdisk -J "$IMG" | python3 -c "
import json, sys
p = json.load(sys.stdin)['partitiontable']['partitions'][$1 - 1]
print(p['start'] * 512, p['size'] * 512)"; }
# The NUC's GPT: 1 ESP, 2 root-a. A Pi's MBR: 2 boot-a (FAT), 5 root-a (assemble-rpi.sh).
case $TARGET in
nuc) read -r esp_at _ < <(part 1); read -r root_at root_len < <(part 2) ;;
*) read -r esp_at _ < <(part 2); read -r root_at root_len < <(part 5) ;;
esac

# The root, shrunk to what it holds: the box writes and checks only those bytes.
dd if="$IMG" of="$W/root.ext4" bs=4M iflag=skip_bytes,count_bytes skip="$root_at" count="$root_len" conv=sparse status=none
e2fsck -fy "$W/root.ext4" >/dev/null 2>&1 || (($? < 4)) || die "the image's root file system does not check out (e2fsck)"
resize2fs -M "$W/root.ext4" >/dev/null 2>&1 || die "resize2fs -M failed"
blocks=$(dumpe2fs -h "$W/root.ext4" 2>/dev/null | sed -n 's/^Block count: *//p')
bsize=$(dumpe2fs -h "$W/root.ext4" 2>/dev/null | sed -n 's/^Block size: *//p')
truncate -s $((blocks * bsize)) "$W/root.ext4"
log "root: $((blocks * bsize / 1048576)) MiB (slot: $((root_len / 1048576)) MiB)"

# Slot A's boot files and command line, as the image boots them: the NUC's kernel and
# initrd from the ESP and its entry; everything on a Pi's boot-a but cmdline.txt (firmware,
# kernel, initrd, device trees, config.txt), which the box writes for the slot it installs.
mkdir "$W/boot"
if [[ $TARGET == nuc ]]; then
    mcopy -n -i "$IMG@@$esp_at" ::/clinicbox/a/vmlinuz ::/clinicbox/a/initrd.img "$W/boot/"
    entry=$(mdir -b -i "$IMG@@$esp_at" ::/loader/entries | grep -i 'clinicbox-a' | head -1)
    [[ -n $entry ]] || die "no slot A entry in the image's ESP"
    mcopy -n -i "$IMG@@$esp_at" "$entry" "$W/entry.conf"
    version=$(sed -n 's/^version *//p' "$W/entry.conf" | tr -d '\r')
    options=$(sed -n 's/^options *//p' "$W/entry.conf" | tr -d '\r')
else
    mcopy -s -n -i "$IMG@@$esp_at" '::/*' "$W/boot/"
    [[ -z $(find "$W/boot" -mindepth 1 -type d) ]] || die "boot-a has folders: a bundle carries plain files"
    options=$(tr -d '\r\n' <"$W/boot/cmdline.txt")
    rm "$W/boot/cmdline.txt"
    version=$(debugfs -R 'cat /usr/lib/os-release' "$W/root.ext4" 2>/dev/null | sed -n 's/^IMAGE_VERSION=//p' | tr -d '"')
    [[ -n $version ]] || die "no IMAGE_VERSION in slot A's os-release"
fi
# Everything but the slot's own root and name, which the box writes for the slot it installs into.
cmdline=$(tr ' ' '\n' <<<"$options" | grep -vE '^(root=|ro$|rw$|clinicbox\.slot=)' | grep -v '^$' | paste -sd' ')
boot_args=()
for f in "$W"/boot/*; do boot_args+=(--boot "$f"); done

mkdir -p "$OUT"
bundle=$OUT/clinicbox-$TARGET-$version.bundle
"$PUBLISH" bundle --board "$TARGET" --version "$version" --root "$W/root.ext4" \
    "${boot_args[@]}" --cmdline "$cmdline" --out "$bundle" >/dev/null
name=$("$PUBLISH" add --repo "$REPO" --keys "$KEYS" --file "$bundle" --board "$TARGET" --version "$version")
log "signed into $REPO as $name ($(du -h "$bundle" | cut -f1))"
echo "$bundle"
