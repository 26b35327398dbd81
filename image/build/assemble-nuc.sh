#!/bin/bash
# Assemble the x86_64 UEFI disk image from a customised root.
#
#   assemble-nuc.sh ROOT WORKDIR OUT.img
#
# GPT (systemd-repart):
#   1 esp     FAT32, systemd-boot, kernel+initrd per slot, BLS entries with tries
#   2 root-a  ext4, read-only at run time, the root built here
#   3 root-b  empty: the inactive slot that updates write
#   4 data    empty: LUKS2-formatted and grown at first boot (data-setup)
# The build host has no VFAT, GPT or dm-crypt in its kernel, so the ESP is made
# with mkfs.vfat + mcopy and the root with mkfs.ext4 -d; repart only copies
# blocks into the partition table (feasibility.md section 5c).
set -euo pipefail

R=${1:?root}
W=${2:?workdir}
OUT=${3:?output image}
: "${HW_IMAGE_ROOT_SLOT_SIZE:?} ${HW_IMAGE_DATA_INITIAL_SIZE:?} ${IMAGE_VERSION:?}"
ESP_SIZE=${HW_IMAGE_ESP_SIZE:-256M}
TRIES=${HW_IMAGE_BOOT_TRIES:-3}

# Fixed identifiers: the boot entries name the root by PARTUUID before the
# partition table exists, and identical inputs give identical images.
DISK_SEED=0c11cb0c-5e00-4b1d-9a9e-000000000000
ESP_UUID=0c11cb0c-5e00-4b1d-9a9e-0000000000e5
ROOT_A_UUID=0c11cb0c-5e00-4b1d-9a9e-00000000000a
ROOT_B_UUID=0c11cb0c-5e00-4b1d-9a9e-00000000000b
DATA_UUID=0c11cb0c-5e00-4b1d-9a9e-0000000000da
ROOT_A_FS_UUID=0c11cb0c-5e00-4b1d-9a9e-0000000f500a

log() { printf '[assemble nuc] %s\n' "$*" >&2; }

kernel=$(ls "$R"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$R/boot/initrd.img-${kernel##*/vmlinuz-}
[[ -f $initrd ]] || { echo "no initrd for $kernel" >&2; exit 1; }

# --- root-a -----------------------------------------------------------------
# No journal: nothing writes this file system at run time; updates replace the
# whole inactive slot.
rm -f "$W/root-a.ext4"
truncate -s "$HW_IMAGE_ROOT_SLOT_SIZE" "$W/root-a.ext4"
mkfs.ext4 -q -L root-a -U "$ROOT_A_FS_UUID" -O ^has_journal -m 0 -b 4096 \
    -E root_owner=0:0 -d "$R" "$W/root-a.ext4"
log "root-a: $(du -h --apparent-size "$W/root-a.ext4" | cut -f1) slot, $(du -sh "$R" | cut -f1) used"

# --- ESP --------------------------------------------------------------------
E=$W/esp
rm -rf "$E" "$W/esp.img"
mkdir -p "$E/EFI/BOOT" "$E/EFI/systemd" "$E/loader/entries" "$E/clinicbox/a"
cp "$R/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$E/EFI/BOOT/BOOTX64.EFI"
cp "$R/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$E/EFI/systemd/systemd-bootx64.efi"
cp "$kernel" "$E/clinicbox/a/vmlinuz"
cp "$initrd" "$E/clinicbox/a/initrd.img"
# timeout 0 hides the menu (hold a key at power-on to see it); no editor, so the
# kernel command line (init=/bin/sh) cannot be changed at the console.
cat >"$E/loader/loader.conf" <<EOF
timeout 0
editor no
auto-entries no
auto-firmware no
console-mode keep
default clinicbox-*
EOF
# "+N" = tries left: systemd-boot counts down at each boot and sorts an entry
# with none left after the others; systemd-bless-boot drops the counter once
# clinicbox-mark-good has passed (boot-complete.target). With sort-key set, the
# loader puts the newest version first: an update (clinicbox update) writes the
# other slot's entry with a newer version, and the default pattern takes the
# first entry that still has tries.
cat >"$E/loader/entries/clinicbox-a+$TRIES.conf" <<EOF
title      ClinicBox $IMAGE_VERSION (slot A)
sort-key   clinicbox
version    $IMAGE_VERSION
linux      /clinicbox/a/vmlinuz
initrd     /clinicbox/a/initrd.img
options    root=PARTUUID=$ROOT_A_UUID ro rootfstype=ext4 clinicbox.slot=a systemd.gpt_auto=0 panic=10 ${HW_IMAGE_KERNEL_CMDLINE:-}
EOF
truncate -s "$ESP_SIZE" "$W/esp.img"
mkfs.vfat -F 32 -n ESP -i C11CB0C5 "$W/esp.img" >/dev/null
(cd "$E" && mcopy -s -i "$W/esp.img" EFI loader clinicbox ::/)

# --- partition table ----------------------------------------------------------
D=$W/repart.d
rm -rf "$D"
mkdir -p "$D"
cat >"$D/10-esp.conf" <<EOF
[Partition]
Type=esp
Label=esp
UUID=$ESP_UUID
CopyBlocks=$W/esp.img
EOF
cat >"$D/20-root-a.conf" <<EOF
[Partition]
Type=root-x86-64
Label=root-a
UUID=$ROOT_A_UUID
CopyBlocks=$W/root-a.ext4
EOF
cat >"$D/21-root-b.conf" <<EOF
[Partition]
Type=root-x86-64
Label=root-b
UUID=$ROOT_B_UUID
SizeMinBytes=$HW_IMAGE_ROOT_SLOT_SIZE
SizeMaxBytes=$HW_IMAGE_ROOT_SLOT_SIZE
EOF
# Plain "linux-generic", not "var": systemd's GPT auto-discovery must never
# try to mount the data partition by itself.
cat >"$D/30-data.conf" <<EOF
[Partition]
Type=linux-generic
Label=data
UUID=$DATA_UUID
SizeMinBytes=$HW_IMAGE_DATA_INITIAL_SIZE
SizeMaxBytes=$HW_IMAGE_DATA_INITIAL_SIZE
EOF
rm -f "$OUT"
systemd-repart --definitions="$D" --empty=create --size=auto --seed="$DISK_SEED" \
    --dry-run=no --no-pager "$OUT" >"$W/repart.log" 2>&1 || { cat "$W/repart.log" >&2; exit 1; }
log "$(sfdisk -l "$OUT" | grep -E '^Disk /|img[0-9]' | tr -s ' ')"
