#!/bin/bash
# Assemble a Raspberry Pi 4/5 disk image (SD card or USB/NVMe) from a customised root.
#
#   assemble-rpi.sh ROOT WORKDIR OUT.img
#
# MBR, as the Pi firmware's A/B boot expects (autoboot.txt names MBR
# partitions 1-4):
#   1 autoboot FAT   autoboot.txt: boot partition 2, tryboot partition 3
#   2 boot-a   FAT   firmware, kernel, initrd, device trees, config.txt, cmdline.txt (slot A)
#   3 boot-b   FAT   empty: written by updates together with root-b
#   4 extended
#   5 root-a   ext4  read-only at run time (root=PARTUUID=<disk id>-05)
#   6 root-b         empty
#   7 data           empty: LUKS2-formatted and grown at first boot (data-setup)
# "reboot '0 tryboot'" boots the other slot once; clinicbox-mark-good commits
# it by rewriting autoboot.txt, otherwise the next reset returns to the default.
set -euo pipefail

R=${1:?root}
W=${2:?workdir}
OUT=${3:?output image}
: "${HW_IMAGE_ROOT_SLOT_SIZE:?} ${HW_IMAGE_DATA_INITIAL_SIZE:?} ${HW_BOARD_DEVICE_TREE:?} ${IMAGE_VERSION:?} ${HW_BOARD_NAME:?}"
BOOT_SIZE=${HW_IMAGE_BOOT_PARTITION_SIZE:-256M}
DISK_ID=0x${HW_IMAGE_DISK_ID:?hw/<board>.toml [image] disk_id}
ROOT_A_FS_UUID=0c11cb0c-5e00-4b1d-9a9e-0000000f500a

log() { printf '[assemble %s] %s\n' "$HW_BOARD_NAME" "$*" >&2; }
mib() { numfmt --from=iec "$1" | awk '{printf "%d", $1 / 1048576}'; }

kernel=$(ls "$R"/boot/vmlinuz-* | sort -V | tail -1)
kver=${kernel##*/vmlinuz-}
initrd=$R/boot/initrd.img-$kver
dtbdir=$R/usr/lib/linux-image-$kver/broadcom
fw=$R/usr/lib/raspi-firmware
[[ -f $initrd ]] || { echo "no initrd for $kernel" >&2; exit 1; }
[[ -d $fw ]] || { echo "no Raspberry Pi firmware in the root ($fw)" >&2; exit 1; }
if [[ ! -f $dtbdir/$HW_BOARD_DEVICE_TREE ]]; then
    echo "kernel $kver has no $HW_BOARD_DEVICE_TREE: it cannot boot a $HW_BOARD_NAME" >&2
    exit 1
fi

# --- root-a -----------------------------------------------------------------
rm -f "$W/root-a.ext4"
truncate -s "$HW_IMAGE_ROOT_SLOT_SIZE" "$W/root-a.ext4"
mkfs.ext4 -q -L root-a -U "$ROOT_A_FS_UUID" -O ^has_journal -m 0 -b 4096 \
    -E root_owner=0:0 -d "$R" "$W/root-a.ext4"

# --- boot partitions ------------------------------------------------------------
B=$W/boot-a
rm -rf "$B"
mkdir -p "$B"
cp -r "$fw"/. "$B"/
rm -f "$B"/VERSION
cp "$dtbdir"/bcm27*-rpi-*.dtb "$B"/
cp "$kernel" "$B/vmlinuz"
cp "$initrd" "$B/initrd.img"
cat >"$B/config.txt" <<EOF
# ClinicBox $IMAGE_VERSION for $HW_BOARD_DESCRIPTION: boot slot A.
# autoboot.txt on partition 1 chooses this partition (2) or slot B (3).
[all]
arm_64bit=1
# Debian's kernel uses the mainline device trees.
upstream_kernel=1
enable_uart=1
kernel=vmlinuz
initramfs initrd.img followkernel
device_tree=$HW_BOARD_DEVICE_TREE
cmdline=cmdline.txt
disable_splash=1
# Hardware watchdog (systemd pets it: RuntimeWatchdogSec) and I2C for UPS HATs.
dtparam=watchdog=on
dtparam=i2c_arm=on
EOF
printf 'root=PARTUUID=%s-05 ro rootfstype=ext4 rootwait clinicbox.slot=a systemd.gpt_auto=0 panic=10 cma=64M %s\n' \
    "${DISK_ID#0x}" "${HW_IMAGE_KERNEL_CMDLINE:-}" >"$B/cmdline.txt"

fat() { # fat IMG SIZE LABEL [DIR]
    rm -f "$1"
    truncate -s "$2" "$1"
    mkfs.vfat -F 32 -n "$3" "$1" >/dev/null
    if [[ -n ${4:-} ]]; then (cd "$4" && mcopy -s -i "$1" ./* ::/); fi
}
mkdir -p "$W/autoboot"
"$R/usr/lib/clinicbox/autoboot-txt" 2 3 >"$W/autoboot/autoboot.txt"
fat "$W/autoboot.img" 64M AUTOBOOT "$W/autoboot"
fat "$W/boot-a.img" "$BOOT_SIZE" BOOT-A "$B"
fat "$W/boot-b.img" "$BOOT_SIZE" BOOT-B

# --- partition table ----------------------------------------------------------
root_mib=$(mib "$HW_IMAGE_ROOT_SLOT_SIZE")
data_mib=$(mib "$HW_IMAGE_DATA_INITIAL_SIZE")
boot_mib=$(mib "$BOOT_SIZE")
# 1 MiB before p1, 1 MiB per logical partition for its EBR, 1 MiB spare.
total=$((1 + 64 + 2 * boot_mib + 3 + 2 * root_mib + data_mib + 1))
rm -f "$OUT"
truncate -s "${total}M" "$OUT"
sfdisk -q "$OUT" <<EOF
label: dos
label-id: $DISK_ID
unit: sectors

start=2048, size=64MiB, type=c, bootable
size=${boot_mib}MiB, type=c
size=${boot_mib}MiB, type=c
type=f
size=${root_mib}MiB, type=83
size=${root_mib}MiB, type=83
size=${data_mib}MiB, type=83
EOF

put() { # put PARTNO FILE: copy FILE's blocks into partition PARTNO (holes stay holes)
    local start size
    read -r start size < <(partx -g -o START,SECTORS --nr "$1" "$OUT")
    (($(stat -c %s "$2") <= size * 512)) || { echo "$2 does not fit partition $1" >&2; exit 1; }
    dd if="$2" of="$OUT" bs=1M seek=$((start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
}
put 1 "$W/autoboot.img"
put 2 "$W/boot-a.img"
put 3 "$W/boot-b.img"
put 5 "$W/root-a.ext4"
log "$(partx -g -o NR,START,SECTORS,TYPE "$OUT" | awk '{printf "p%s %dMiB@%dMiB type %s; ", $1, $3/2048, $2/2048, $4}')"
