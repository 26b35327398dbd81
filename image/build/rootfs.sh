#!/bin/bash
# Build (or take from the cache) the Debian root filesystem for one architecture.
#
#   rootfs.sh ARCH OUT_TARBALL
#
# The result is a zstd tarball of a debootstrapped bookworm with the packages of
# image/packages/{common,ARCH}.list installed, pinned to image/packages/ARCH.lock
# where possible. It holds nothing ClinicBox-specific: customise.sh adds that per
# build. The tarball is cached under $CLINICBOX_IMAGE_CACHE, keyed by the hash of
# the package lists, the lock, this script and the mirror settings, so a build
# only re-runs debootstrap when one of those changes (arm64 under qemu-user takes
# minutes).
#
# Lock policy (image/README.md, "Package versions"): the lock is a floor and a
# reviewed record, never a ceiling. A package the mirror (bookworm, -updates,
# -security) offers newer than the lock is kept and reported as LOCK DRIFT; the
# build never downgrades below what Debian currently ships.
#
# Env: CLINICBOX_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#      CLINICBOX_DEBIAN_SNAPSHOT (e.g. 20261120T000000Z: use snapshot.debian.org),
#      CLINICBOX_IMAGE_STRICT_PINS=1 (fail on any drift from the lock: release builds),
#      CLINICBOX_IMAGE_UPDATE_LOCK=1 (rewrite ARCH.lock from what was installed),
#      CLINICBOX_IMAGE_EXTRA_PACKAGES="a b" (one-off extra packages, e.g. debug tools).
set -euo pipefail

ARCH=${1:?arch (amd64|arm64)}
OUT=${2:?output tarball}
HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=$(dirname "$HERE")
PKGDIR=$IMAGE/packages
SUITE=bookworm
CACHE=${CLINICBOX_IMAGE_CACHE:-/var/cache/clinicbox/image}

if [[ -n ${CLINICBOX_DEBIAN_SNAPSHOT:-} ]]; then
    MIRROR=https://snapshot.debian.org/archive/debian/$CLINICBOX_DEBIAN_SNAPSHOT
    SECURITY=https://snapshot.debian.org/archive/debian-security/$CLINICBOX_DEBIAN_SNAPSHOT
else
    MIRROR=${CLINICBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    SECURITY=${CLINICBOX_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
fi

log() { printf '[rootfs %s] %s\n' "$ARCH" "$*" >&2; }

packages() {
    { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PKGDIR/common.list" "$PKGDIR/$ARCH.list"
      printf '%s\n' ${CLINICBOX_IMAGE_EXTRA_PACKAGES:-}; } | grep -v '^$' | sort -u
}

# Packages only unpacked into the root (see $ARCH.unpack), never installed.
unpack_packages() {
    [[ -f $PKGDIR/$ARCH.unpack ]] || return 0
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PKGDIR/$ARCH.unpack" | grep -v '^$' | sort -u
}

# The kernel, when it does not come from $SUITE (see $ARCH.kernel): a metapackage
# named pkg/suite whose files are unpacked, not installed.
kernel_package() {
    [[ -f $PKGDIR/$ARCH.kernel ]] || return 0
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PKGDIR/$ARCH.kernel" | grep -v '^$' | head -1
}

LOCK=$PKGDIR/$ARCH.lock
key=$( {
    echo "$SUITE $MIRROR $SECURITY $ARCH"
    packages
    unpack_packages
    kernel_package
    [[ -f $LOCK ]] && cat "$LOCK"
    cat "$0"
} | sha256sum | cut -c1-16)
CACHED=$CACHE/rootfs-$ARCH-$key.tar.zst

if [[ -f $CACHED && -z ${CLINICBOX_IMAGE_UPDATE_LOCK:-} ]]; then
    log "cache hit: $CACHED"
    ln -f "$CACHED" "$OUT" 2>/dev/null || cp "$CACHED" "$OUT"
    exit 0
fi
log "cache miss (key $key): building with debootstrap from $MIRROR"

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/rootfs-$ARCH.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root

if [[ $ARCH != "$(dpkg --print-architecture)" ]]; then
    # Foreign root: maintainer scripts run under qemu-user through binfmt.
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable "qemu-${ARCH/arm64/aarch64}" >/dev/null 2>&1 || true
fi

# The last line a failure prints is its reason: the build stops there.
fail() {
    log "$*"
    exit 1
}

start=$(date +%s)
# A mirror hiccup is retried (debootstrap has no retry of its own); a mirror that
# stays down fails the stage with debootstrap's own last words.
for try in 1 2 3; do
    rm -rf "$R"
    debootstrap --arch="$ARCH" --variant=minbase --components=main,non-free-firmware \
        "$SUITE" "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 && break
    tail -5 "$WORK/debootstrap.log" >&2
    ((try < 3)) || fail "debootstrap failed 3 times: $(grep -E '^(E|W):' "$WORK/debootstrap.log" | tail -1)"
    log "debootstrap failed (try $try of 3); retrying in $((try * 15)) s"
    sleep $((try * 15))
done
log "debootstrap: $(($(date +%s) - start)) s"

cat >"$R/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main non-free-firmware
deb $MIRROR $SUITE-updates main non-free-firmware
deb $SECURITY $SUITE-security main non-free-firmware
# Only for packages named "pkg/suite" in a list: the Pi kernel (arm64.kernel).
deb $MIRROR $SUITE-backports main non-free-firmware
deb $MIRROR trixie-backports main
EOF
# Keep images small: no recommends, no docs, no translations.
cat >"$R/etc/apt/apt.conf.d/90clinicbox" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
// A mirror hiccup is retried with backoff before the stage gives up.
Acquire::Retries "5";
EOF
cat >"$R/etc/dpkg/dpkg.cfg.d/90clinicbox-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
EOF
# The initramfs must find root on any disk controller, so not MODULES=dep (that
# would follow the build host); zstd decompresses fastest on the Pi.
mkdir -p "$R/etc/initramfs-tools/conf.d"
printf 'MODULES=most\nCOMPRESS=zstd\n' >"$R/etc/initramfs-tools/conf.d/clinicbox.conf"
# The initramfs is built once, after all packages (under qemu-user each build
# takes minutes, and the kernel's postinst plus the trigger would build it
# twice): INITRD=No below silences the kernel hook, this the trigger.
mkdir -p "$R/etc/initramfs-tools"
echo 'update_initramfs=no' >"$R/etc/initramfs-tools/update-initramfs.conf"
# Placeholder host keys stop openssh-server's postinst from generating keys
# (slow under emulation); customise.sh deletes them: each box makes its own.
mkdir -p "$R/etc/ssh"
for t in rsa ecdsa ed25519; do : >"$R/etc/ssh/ssh_host_${t}_key"; : >"$R/etc/ssh/ssh_host_${t}_key.pub"; done

# Everything below runs in a private mount namespace, so no mount outlives it.
PKGS=$(packages | tr '\n' ' ')
UNPACK=$(unpack_packages | tr '\n' ' ')
KERNEL=$(kernel_package)
unshare --mount --propagation private env R="$R" PKGS="$PKGS" UNPACK="$UNPACK" KERNEL="$KERNEL" LOCK="$LOCK" \
    STRICT="${CLINICBOX_IMAGE_STRICT_PINS:-}" bash -euo pipefail -c '
    # What the stage is doing, for the failure line; the log it writes to.
    stage() { printf "%s\n" "$*" >"$R/../stage"; }
    mount -t proc proc "$R/proc"
    mount -t sysfs sys "$R/sys"
    mount --bind /dev "$R/dev"
    mount -t devpts devpts "$R/dev/pts"
    # Before every step that downloads: installing systemd-resolved turns the
    # chroot'"'"'s resolv.conf into a link into /run, which is empty here.
    resolver() { rm -f "$R/etc/resolv.conf"; cp /etc/resolv.conf "$R/etc/resolv.conf"; }
    resolver
    printf "#!/bin/sh\nexit 101\n" >"$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
    export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 INITRD=No
    pkgver() { printf "%s %s\n" "$(dpkg-deb -f "$1" Package)" "$(dpkg-deb -f "$1" Version)"; }
    stage "apt-get update"
    chroot "$R" apt-get update -q >"$R/../install.log" 2>&1
    # Packages unpacked without installing (no maintainer scripts), e.g. the Pi
    # firmware whose kernel hooks expect a mounted /boot/firmware. Fetched first:
    # installing systemd-resolved later replaces the chroot'"'"'s resolv.conf.
    if [[ -n $UNPACK ]]; then
        stage "downloading $UNPACK"
        chroot "$R" sh -c "cd /tmp && apt-get download -q $UNPACK" >>"$R/../install.log" 2>&1
        mkdir -p "$R/../debs"
        mv "$R"/tmp/*.deb "$R/../debs/"
    fi
    # The kernel from a newer suite (see below), fetched now for the same reason:
    # the suite'"'"'s newest, like every other package (its security fixes land
    # there), compared with the lock afterwards.
    if [[ -n $KERNEL ]]; then
        name=${KERNEL%%/*} suite=${KERNEL#*/}
        want=$KERNEL
        stage "downloading the kernel $want"
        chroot "$R" apt-get install -y -q --download-only -t "$suite" "$want" >>"$R/../install.log" 2>&1
        for deb in "$R"/var/cache/apt/archives/"${name}"_*.deb; do
            pkgver "$deb" >"$R/../kernel-version"
        done
        read -r _ got <"$R/../kernel-version"
        locked=$(awk -v n="$name" "\$1==n{print \$2}" "$LOCK" 2>/dev/null || true)
        if [[ -n $locked && $got != "$locked" ]]; then
            echo "$name $locked -> $got ($suite)" >>"$R/../drift.txt"
        fi
        mkdir -p "$R/../kernel-debs"
        for deb in "$R"/var/cache/apt/archives/linux-{base,binary,modules}-[0-9]*.deb; do
            [[ -f $deb ]] || continue
            mv "$deb" "$R/../kernel-debs/"
        done
    fi
    # confold: keep the update-initramfs.conf written above.
    stage "installing the package lists"
    chroot "$R" apt-get install -y -q -o Dpkg::Options::=--force-confold $PKGS >>"$R/../install.log" 2>&1
    # The lock is a floor, never a ceiling: a package older than its lock is raised
    # to it; one newer than its lock (a Debian security or stable update) is kept
    # and reported as drift, never downgraded.
    if [[ -f $LOCK ]]; then
        stage "checking installed versions against $(basename "$LOCK")"
        resolver
        raise=()
        while read -r name ver; do
            [[ -z $name || $name == \#* ]] && continue
            have=$(chroot "$R" dpkg-query -W -f="\${Version}" "$name" 2>/dev/null || true)
            [[ -z $have || $have == "$ver" ]] && continue
            if dpkg --compare-versions "$have" gt "$ver"; then
                from=$(chroot "$R" apt-cache madison "$name" | awk -v v="$have" "\$3==v{print \$6; exit}")
                echo "$name $ver -> $have (${from:-installed})" >>"$R/../drift.txt"
            elif chroot "$R" apt-cache madison "$name" | awk -v v="$ver" "\$3==v{f=1} END{exit !f}"; then
                raise+=("$name=$ver")
            else
                echo "$name $ver -> $have (locked version not on the mirror)" >>"$R/../drift.txt"
            fi
        done <"$LOCK"
        if ((${#raise[@]})); then
            stage "raising ${#raise[@]} packages to their locked versions"
            chroot "$R" apt-get install -y -q "${raise[@]}" >>"$R/../install.log" 2>&1
        fi
        if [[ -s $R/../drift.txt ]]; then
            sed "s/^/LOCK DRIFT: /" "$R/../drift.txt" >&2
            [[ -z $STRICT ]] || { stage "strict pins: $(wc -l <"$R/../drift.txt") packages differ from the lock: refresh image/packages/*.lock (CLINICBOX_IMAGE_UPDATE_LOCK=1) and review"; exit 1; }
        fi
    fi
    # A kernel from a newer suite (the Pis: trixie-backports) has maintainer scripts
    # that need that suite'"'"'s tools, so its files are unpacked and set up here as
    # its scripts would: /boot files, module index. The image is replaced whole on
    # update, never by apt, so dpkg not knowing these files costs nothing.
    if [[ -n $KERNEL ]]; then
        kv=
        for deb in "$R"/../kernel-debs/*.deb; do
            [[ -f $deb ]] || continue
            dpkg-deb -x "$deb" "$R"
            pkgver "$deb" >>"$R/../unpacked.txt"
            name=$(dpkg-deb -f "$deb" Package)
            [[ $name == linux-modules-* ]] && kv=${name#linux-modules-}
        done
        [[ -n $kv && -f $R/usr/lib/modules/$kv/vmlinuz ]] || { echo "kernel $KERNEL: no modules package or vmlinuz" >&2; exit 1; }
        for f in vmlinuz config System.map; do
            cp "$R/usr/lib/modules/$kv/$f" "$R/boot/$f-$kv"
        done
        chroot "$R" depmod -a "$kv"
        # Forced into the initramfs, in this order: on a Pi 5 the RP1 south bridge
        # (Ethernet, USB, GPIO) probes only if the BCM2712 MIP interrupt controller
        # is already there; the SD host and Ethernet follow. Harmless elsewhere.
        printf "%s\n" irq-bcm2712-mip rp1_pci clk-rp1 pinctrl-rp1 pinctrl-brcmstb \
            pinctrl-brcmstb-bcm2712 gpio-brcmstb sdhci-brcmstb macb >>"$R/etc/initramfs-tools/modules"
    fi
    stage "building the initramfs"
    printf "update_initramfs=yes\nbackup_initramfs=no\n" >"$R/etc/initramfs-tools/update-initramfs.conf"
    rm -f "$R"/boot/initrd.img-*
    chroot "$R" update-initramfs -c -k all >>"$R/../install.log" 2>&1
    for deb in "$R"/../debs/*.deb; do
        [[ -f $deb ]] || continue
        dpkg-deb -x "$deb" "$R/../unpack"
        pkgver "$deb" >>"$R/../unpacked.txt"
    done
    chroot "$R" apt-get clean
    rm -f "$R/usr/sbin/policy-rc.d" "$R/etc/resolv.conf"
' || {
    tail -30 "$WORK/install.log" >&2
    # The reason: what the stage was doing, and apt'"'"'s (or the tool'"'"'s) last error.
    why=$(grep -E '^E: ' "$WORK/install.log" 2>/dev/null | tail -1 || true)
    fail "package stage failed: $(cat "$WORK/stage" 2>/dev/null || echo mounting the chroot)${why:+: $why}"
}
if [[ -d $WORK/unpack/usr/lib/raspi-firmware ]]; then
    cp -r "$WORK/unpack/usr/lib/raspi-firmware" "$R/usr/lib/"
    grep raspi-firmware "$WORK/unpacked.txt" >"$R/usr/lib/raspi-firmware/VERSION"
fi
# What is in the root without dpkg knowing, and how it differs from the lock:
# the manifest lists both (customise.sh).
mkdir -p "$R/usr/share/clinicbox"
if [[ -f $WORK/unpacked.txt ]]; then
    sort -u "$WORK/unpacked.txt" >"$R/usr/share/clinicbox/unpacked-packages.txt"
fi
if [[ -s $WORK/drift.txt ]]; then
    sort -u "$WORK/drift.txt" >"$R/usr/share/clinicbox/lock-drift.txt"
    log "$(wc -l <"$WORK/drift.txt") packages newer than (or missing from) $(basename "$LOCK"): listed in the manifest's lock_drift"
fi
log "packages installed: $(($(date +%s) - start)) s"

chroot "$R" dpkg-query -W -f='${Package} ${Version}\n' | sort >"$WORK/installed.txt"
if [[ -n ${CLINICBOX_IMAGE_UPDATE_LOCK:-} || ! -f $LOCK ]]; then
    {
        echo "# Exact package versions of the $ARCH root (debootstrap minbase + $ARCH.list + common.list)."
        echo "# Written by image/build/rootfs.sh with CLINICBOX_IMAGE_UPDATE_LOCK=1; review diffs like code."
        cat "$WORK/installed.txt"
        # The kernel unpacked from a newer suite (arm64.kernel): pinned, not installed.
        cat "$WORK/kernel-version" 2>/dev/null || true
    } >"$LOCK"
    log "wrote $LOCK"
    # The lock is part of the key: store under the key the next build will compute.
    key=$( {
        echo "$SUITE $MIRROR $SECURITY $ARCH"
        packages
        unpack_packages
        kernel_package
        cat "$LOCK"
        cat "$0"
    } | sha256sum | cut -c1-16)
    CACHED=$CACHE/rootfs-$ARCH-$key.tar.zst
fi

tar --numeric-owner --xattrs --xattrs-include='*' -C "$R" -cf - . | zstd -q -T0 -3 -o "$WORK/rootfs.tar.zst"
mv "$WORK/rootfs.tar.zst" "$CACHED"
cp "$WORK/installed.txt" "${CACHED%.tar.zst}.packages"
# Old cache entries for this arch are dead weight (hundreds of MB each).
find "$CACHE" -maxdepth 1 -name "rootfs-$ARCH-*" ! -name "$(basename "${CACHED%.tar.zst}").*" -delete
ln -f "$CACHED" "$OUT" 2>/dev/null || cp "$CACHED" "$OUT"
log "done in $(($(date +%s) - start)) s: $CACHED ($(du -h "$CACHED" | cut -f1))"
