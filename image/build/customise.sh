#!/bin/bash
# Turn the cached Debian root (rootfs.sh) into a ClinicBox root for one board.
#
#   customise.sh ROOT
#
# ROOT is an unpacked rootfs tarball; it is changed in place. Inputs come from
# the environment, set by build-image.sh: the HW_* board profile variables,
# CLINICBOX_BIN (the release binary), IMAGE_VERSION, IMAGE_COMMIT, IMAGE_DIR,
# BOARD_FILE, CLINICBOX_SSH_AUTHORIZED_KEYS (optional file).
#
# The root is read-only at run time, so everything that would normally happen on
# first boot in /etc or /usr (users, unit enablement, caches) happens here.
set -euo pipefail

R=${1:?root directory}
: "${HW_BOARD_NAME:?} ${CLINICBOX_BIN:?} ${IMAGE_VERSION:?} ${IMAGE_COMMIT:?} ${IMAGE_DIR:?} ${BOARD_FILE:?}"
LIB=$R/usr/lib/clinicbox
UNITS=$R/usr/lib/systemd/system

log() { printf '[customise %s] %s\n' "$HW_BOARD_NAME" "$*" >&2; }

# Values substituted into *.in templates and units (@NAME@).
SSH_RULE=""
if [[ -n ${CLINICBOX_SSH_AUTHORIZED_KEYS:-} ]]; then
    SSH_RULE='        tcp dport 22 accept'
fi
declare -A SUBST=(
    [LAN]=$HW_NETWORK_LAN_INTERFACE
    [WAN]=$HW_NETWORK_UPLINK_INTERFACE
    [UPLINK_INTERFACE]=$HW_NETWORK_UPLINK_INTERFACE
    [SSH_RULE]=$SSH_RULE
    [SERVICE_WATCHDOG_SEC]=$HW_WATCHDOG_SERVICE_SEC
    [WATCHDOG_RUNTIME_SEC]=$HW_WATCHDOG_RUNTIME_SEC
    [JOURNAL_RUNTIME_MAX_USE]=${HW_JOURNAL_RUNTIME_MAX_USE:-64M}
    [BOARD]=$HW_BOARD_NAME
    [STORE_CACHE_MIB]=$HW_STORE_CACHE_MIB
    [STORE_MEMORY_HIGH_MIB]=$HW_STORE_MEMORY_HIGH_MIB
    [STORE_MEMORY_MAX_MIB]=$HW_STORE_MEMORY_MAX_MIB
    [BOOT_TRIES]=${HW_IMAGE_BOOT_TRIES:-3}
)
case $HW_IMAGE_BOOT in
systemd-boot) SUBST[UPDATE_BOOT]='boot = "systemd-boot"
esp = "/efi"' ;;
rpi-tryboot) SUBST[UPDATE_BOOT]="boot = \"rpi-tryboot\"
# The MBR has no partition labels: PARTUUIDs (hw/$HW_BOARD_NAME.toml disk_id).
root_partitions = [\"by-partuuid/$HW_IMAGE_DISK_ID-05\", \"by-partuuid/$HW_IMAGE_DISK_ID-06\"]
boot_partitions = [\"by-partuuid/$HW_IMAGE_DISK_ID-02\", \"by-partuuid/$HW_IMAGE_DISK_ID-03\"]" ;;
*) echo "unknown [image] boot = $HW_IMAGE_BOOT" >&2; exit 1 ;;
esac
render() { # render SRC DST: copy with @NAME@ substituted; fail on leftovers
    local text k
    text=$(<"$1")
    for k in "${!SUBST[@]}"; do text=${text//@$k@/${SUBST[$k]}}; done
    if [[ $text =~ @[A-Z_]+@ ]]; then
        echo "unsubstituted ${BASH_REMATCH[0]} in $1" >&2
        return 1
    fi
    printf '%s\n' "$text" >"$2"
}

# --- the binary -------------------------------------------------------------
install -D -m 0755 "$CLINICBOX_BIN" "$R/usr/bin/clinicbox"

# --- units, users, tmpfiles, scripts -----------------------------------------
mkdir -p "$UNITS" "$LIB" "$R/usr/lib/sysusers.d" "$R/usr/lib/tmpfiles.d"
for u in "$IMAGE_DIR"/units/*.service "$IMAGE_DIR"/units/*.path "$IMAGE_DIR"/units/*.mount "$IMAGE_DIR"/units/*.timer; do
    render "$u" "$UNITS/$(basename "$u")"
done
POWER_UNITS="clinicbox-power.service clinicbox-power-shutdown.path"
if [[ ${CLINICBOX_HAS_POWER:-1} != 1 ]]; then
    rm -f "$UNITS"/clinicbox-power*.service "$UNITS"/clinicbox-power*.path
    POWER_UNITS=
fi
install -m 0644 "$IMAGE_DIR/units/clinicbox.sysusers" "$R/usr/lib/sysusers.d/clinicbox.conf"
install -m 0644 "$IMAGE_DIR/units/clinicbox.tmpfiles" "$R/usr/lib/tmpfiles.d/clinicbox.conf"
install -m 0644 "$IMAGE_DIR/units/data-layout.tmpfiles" "$LIB/data-layout.conf"
for s in "$IMAGE_DIR"/scripts/*; do install -m 0755 "$s" "$LIB/$(basename "$s")"; done
install -m 0644 "$BOARD_FILE" "$LIB/board.toml"
install -D -m 0644 "$IMAGE_DIR/README.md" "$R/usr/share/doc/clinicbox/README.image.md"
# The update repository's root metadata this release trusts ([uplink.update]
# root_file): the ministry's, from `clinicbox-publish init`.
if [[ -n ${CLINICBOX_UPDATE_ROOT:-} ]]; then
    install -D -m 0644 "$CLINICBOX_UPDATE_ROOT" "$R/usr/share/clinicbox/update-root.json"
else
    log "WARNING: no CLINICBOX_UPDATE_ROOT: this image trusts no update repository and can only be reflashed"
fi

# Fixed, public key for boards without TPM or key stick. Its name says what it is.
printf 'clinicbox-INSECURE-demo-key: anyone can read data encrypted with this\n' >"$LIB/demo-data.key"
chmod 0400 "$LIB/demo-data.key"

case $HW_IMAGE_BOOT in
systemd-boot) DATA_PARTITION=4 TABLE=gpt ;;
rpi-tryboot) DATA_PARTITION=7 TABLE=dos ;;
*) echo "unknown [image] boot = $HW_IMAGE_BOOT" >&2; exit 1 ;;
esac
cat >"$LIB/storage.env" <<EOF
# Generated from hw/$HW_BOARD_NAME.toml [storage] by image/build/customise.sh.
CIPHER='$HW_STORAGE_CIPHER'
KEY_SIZE='$HW_STORAGE_KEY_SIZE'
SECTOR_SIZE='${HW_STORAGE_SECTOR_SIZE:-4096}'
UNLOCK_ORDER='$HW_STORAGE_UNLOCK'
TPM2_PCRS='${HW_STORAGE_TPM2_PCRS:-7}'
DATA_PARTITION='$DATA_PARTITION'
PARTITION_TABLE='$TABLE'
EOF
cat >"$LIB/boot.env" <<EOF
# Generated from hw/$HW_BOARD_NAME.toml [image] by image/build/customise.sh.
BOOT_SCHEME='$HW_IMAGE_BOOT'
HEALTH_PORT='${CLINICBOX_HEALTH_PORT:-80}'
HEALTH_PATH='${CLINICBOX_HEALTH_PATH:-/health}'
SETTLE_SEC='${CLINICBOX_SETTLE_SEC:-20}'
EOF

# --- configuration files ----------------------------------------------------
(cd "$IMAGE_DIR/rootfs" && find . -type f) | while read -r f; do
    f=${f#./}
    mkdir -p "$R/$(dirname "$f")"
    if [[ $f == *.in ]]; then
        render "$IMAGE_DIR/rootfs/$f" "$R/${f%.in}"
    else
        install -m 0644 "$IMAGE_DIR/rootfs/$f" "$R/$f"
    fi
done
mkdir -p "$R/etc/clinicbox"
render "$IMAGE_DIR/config/clinicbox.toml" "$R/etc/clinicbox/clinicbox.toml"

# Every mount point and tmpfs the read-only root needs (a backup stick's too).
mkdir -p "$R/data" "$R/efi" "$R/media/clinicbox/stick"
{
    echo "# ClinicBox: / is read-only (mounted by the kernel command line); these are the writable places."
    echo "tmpfs /tmp tmpfs mode=1777,nosuid,nodev,size=25% 0 0"
    echo "tmpfs /var/tmp tmpfs mode=1777,nosuid,nodev,size=64M 0 0"
    echo "tmpfs /var/log tmpfs mode=0755,nosuid,nodev,noexec,size=16M 0 0"
    echo "tmpfs /var/lib/systemd tmpfs mode=0755,nosuid,nodev,noexec,size=16M 0 0"
    echo "tmpfs /var/cache tmpfs mode=0755,nosuid,nodev,noexec,size=16M 0 0"
    if [[ $HW_IMAGE_BOOT == systemd-boot ]]; then
        # Mounted on demand and idle-unmounted after 30 s: systemd-bless-boot
        # renames the entry here, and a FAT that is not mounted cannot be dirty
        # when the power goes.
        echo "PARTLABEL=esp /efi vfat noauto,x-systemd.automount,x-systemd.idle-timeout=30,umask=0077,nodev,nosuid,noexec,flush 0 2"
    fi
} >"$R/etc/fstab"

# --- identity ---------------------------------------------------------------
echo clinicbox >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tclinicbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
ln -sf ../usr/share/zoneinfo/Etc/UTC "$R/etc/localtime"
echo Etc/UTC >"$R/etc/timezone"
ln -sf ../run/systemd/resolve/resolv.conf "$R/etc/resolv.conf"
# Empty machine-id: systemd mounts a fresh one per boot over it (the root is
# read-only and the journal is volatile, so nothing depends on it persisting).
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
ln -sf /etc/machine-id "$R/var/lib/dbus/machine-id"
# Host keys are per box (first boot, on /data), never baked into the image.
rm -f "$R"/etc/ssh/ssh_host_*
if [[ -n ${CLINICBOX_SSH_AUTHORIZED_KEYS:-} ]]; then
    install -D -m 0600 "$CLINICBOX_SSH_AUTHORIZED_KEYS" "$R/etc/ssh/authorized_keys/root"
    log "SSH enabled for the keys in $CLINICBOX_SSH_AUTHORIZED_KEYS"
fi
# No password logins: root stays locked.
chroot "$R" passwd -l root >/dev/null 2>&1 || sed -i 's/^root:[^:]*:/root:*:/' "$R/etc/shadow"

# --- users and units ----------------------------------------------------------
systemd-sysusers --root="$R" >/dev/null 2>&1

NUT_UNITS=
if [[ -e $R/lib/systemd/system/nut-server.service ]]; then
    # upsd account of clinicbox-power (hw/*.toml [power.source]: user clinicbox,
    # password_file /etc/clinicbox/nut.password). upsd listens on loopback only;
    # the password is random per image build (the root is read-only).
    nutpw=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$R/etc/nut/upsd.users" <<EOF
# clinicbox-power: primary of the UPS (sets FSD for other hosts) and may ask the
# UPS to cut and later restore the load (shutdown.return).
[clinicbox]
    password = $nutpw
    upsmon primary
    instcmds = shutdown.return
    instcmds = shutdown.stayoff
    actions = SET
EOF
    printf '%s\n' "$nutpw" >"$R/etc/clinicbox/nut.password"
    unset nutpw
    chroot "$R" chown root:nut /etc/nut/upsd.users /etc/nut/ups.conf /etc/nut/upsd.conf /etc/nut/nut.conf
    chmod 0640 "$R"/etc/nut/upsd.users "$R"/etc/nut/ups.conf "$R"/etc/nut/upsd.conf "$R"/etc/nut/nut.conf
    chroot "$R" chown root:clinicbox-power /etc/clinicbox/nut.password
    chmod 0640 "$R/etc/clinicbox/nut.password"
    # The driver instance is enabled here: nut-driver-enumerator would write it
    # into the read-only /etc at boot. Without a UPS the driver retries every 15 s.
    NUT_UNITS="nut-server.service nut-driver@ups.service"
fi
systemctl --root="$R" enable systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service nftables.service data.mount clinicbox-firstboot.service \
    clinicbox.service clinicbox-uplink.service clinicbox-mark-good.service $POWER_UNITS $NUT_UNITS >/dev/null 2>&1
systemctl --root="$R" enable clinicbox-update.timer >/dev/null 2>&1
# Nobody can log in on a console (no passwords), so no gettys; timers that
# would write to the read-only root or talk to the network on their own go too.
systemctl --root="$R" mask getty@.service serial-getty@.service \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    e2scrub_reap.service systemd-networkd-wait-online.service ssh.socket \
    systemd-firstboot.service nut-monitor.service nut-driver-enumerator.service \
    nut-driver-enumerator.path >/dev/null 2>&1
systemctl --root="$R" set-default multi-user.target >/dev/null 2>&1

# --- version and manifest ------------------------------------------------------
mkdir -p "$R/usr/share/clinicbox"
cat >>"$R/usr/lib/os-release" <<EOF
IMAGE_ID=clinicbox-$HW_BOARD_NAME
IMAGE_VERSION=$IMAGE_VERSION
CLINICBOX_COMMIT=$IMAGE_COMMIT
EOF
printf '%s %s %s\n' "$IMAGE_VERSION" "$IMAGE_COMMIT" "$HW_BOARD_NAME" >"$LIB/version"

# --- trim -------------------------------------------------------------------
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/* "$R"/var/cache/debconf/*-old \
    "$R"/var/log/* "$R"/tmp/* "$R"/var/tmp/* "$R"/usr/share/man "$R"/usr/share/info
kver=$(basename "$(ls -d "$R"/usr/lib/modules/* | head -1)")
M=$R/usr/lib/modules/$kver/kernel
# Hardware a clinic box never has: sound, video capture, GPUs other than Intel's,
# InfiniBand, SAN adapters, exotic file systems. The initramfs (built before
# this) is not affected.
rm -rf "$M"/sound "$M"/drivers/media "$M"/drivers/gpu/drm/{amd,radeon,nouveau} \
    "$M"/drivers/infiniband "$M"/drivers/staging "$M"/drivers/isdn "$M"/drivers/comedi \
    "$M"/drivers/target "$M"/net/ceph \
    "$M"/drivers/scsi/{lpfc,qla2xxx,qla4xxx,megaraid,mpt3sas,bfa,be2iscsi,bnx2fc,qedf,qedi,smartpqi,aacraid,hisi_sas,pm8001,fnic,csiostor,cxgbi,isci,mvsas,arcmsr,bnx2i,mpi3mr,elx} \
    "$M"/fs/{ocfs2,gfs2,ceph,smb,cifs,nfs,nfsd,xfs,btrfs,jfs,reiserfs,nilfs2,f2fs,ubifs,orangefs,afs,coda,dlm,gfs2}
chroot "$R" depmod -a "$kver"

# systemd's "needs update" checks compare /usr with /etc/.updated: stamp them so
# ldconfig/sysusers/hwdb do not try to write the read-only root at boot.
chroot "$R" systemd-hwdb update >/dev/null 2>&1 || true
chroot "$R" ldconfig

# Manifest: what is inside, for support and for the update service.
{
    printf '{\n  "image": "clinicbox-%s",\n  "version": "%s",\n  "commit": "%s",\n' "$HW_BOARD_NAME" "$IMAGE_VERSION" "$IMAGE_COMMIT"
    printf '  "board": "%s",\n  "built": "%s",\n  "debian": "bookworm",\n' "$HW_BOARD_NAME" "$(date -u +%FT%TZ)"
    printf '  "kernel": "%s",\n' "$kver"
    printf '  "clinicbox_sha256": "%s",\n' "$(sha256sum "$R/usr/bin/clinicbox" | cut -d' ' -f1)"
    printf '  "packages": {\n'
    { chroot "$R" dpkg-query -W -f='${Package} ${Version}\n'
      # Unpacked, not installed (rootfs.sh): the Pi firmware and kernel.
      cat "$R/usr/share/clinicbox/unpacked-packages.txt" 2>/dev/null || true; } | sort |
        awk '{printf "%s    \"%s\": \"%s\"", (NR>1?",\n":""), $1, $2} END{print ""}'
    printf '  },\n'
    # Where the image differs from packages/<arch>.lock (rootfs.sh: newer security or
    # stable updates kept, never downgraded), one "name locked -> installed (suite)" each.
    printf '  "lock_drift": ['
    awk '{gsub(/["\\]/, ""); printf "%s\n    \"%s\"", (NR>1?",":""), $0} END{if (NR) printf "\n  "}' \
        "$R/usr/share/clinicbox/lock-drift.txt" 2>/dev/null || true
    printf ']\n}\n'
} >"$R/usr/share/clinicbox/manifest.json"
python3 -m json.tool "$R/usr/share/clinicbox/manifest.json" >/dev/null
chroot "$R" /lib/systemd/systemd-update-done >/dev/null 2>&1 ||
    touch "$R/etc/.updated" "$R/var/.updated"
log "root customised ($(du -sh "$R" | cut -f1))"
