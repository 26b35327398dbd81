#!/usr/bin/env python3
"""Inspect a Raspberry Pi image without booting it (no Pi firmware emulator exists).

    image/test/inspect_rpi.py --image image/out/clinicbox-pi4-X.img --board pi4

Checks the MBR layout the Pi firmware's A/B boot needs, autoboot.txt, the boot
partition (firmware, kernel, initrd, device tree, config.txt, cmdline.txt naming
root-a), and the root slot (aarch64 binary, the board's LUKS2 cipher, units).
Reads FAT partitions with mtools and mounts root-a read-only through a loop
device (root). Prints PASS/FAIL lines.
"""

import argparse
import os
import re
import subprocess
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DISK_ID = "0xc11cb0c5"
failed = 0


def check(name, ok, detail=""):
    global failed
    failed += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--board", required=True)
    a = ap.parse_args()
    with open(os.path.join(REPO, "hw", f"{a.board}.toml"), "rb") as f:
        hw = tomllib.load(f)
    b = a.board

    dump = run("sfdisk", "-d", a.image).stdout
    parts = {int(m.group(1)): m.group(2) for m in re.finditer(r"\.img(\d+) : (.*)", dump)}
    types = {n: re.search(r"type=(\w+)", p).group(1) for n, p in parts.items()}
    check(f"{b}: MBR with disk id {DISK_ID}", "label: dos" in dump and f"label-id: {DISK_ID}" in dump)
    check(f"{b}: partitions 1-3 FAT (autoboot, boot-a, boot-b), 4 extended, 5-7 Linux (root-a, root-b, data)",
          types == {1: "c", 2: "c", 3: "c", 4: "f", 5: "83", 6: "83", 7: "83"}, str(types))

    def start(n):
        return int(re.search(r"start=\s*(\d+)", parts[n]).group(1)) * 512

    def mtype(n, path):
        return run("mtype", "-i", f"{a.image}@@{start(n)}", f"::{path}").stdout

    def mdir(n):
        return run("mdir", "-b", "-i", f"{a.image}@@{start(n)}", "::/").stdout

    ab = mtype(1, "/autoboot.txt")
    check(f"{b}: autoboot.txt boots partition 2, tryboots partition 3 (tryboot_a_b)",
          "tryboot_a_b=1" in ab and re.search(r"\[all\][^[]*boot_partition=2", ab) is not None
          and re.search(r"\[tryboot\][^[]*boot_partition=3", ab) is not None, f"{len(ab.encode())} bytes")
    check(f"{b}: autoboot.txt within the firmware's 512 bytes", 0 < len(ab.encode()) <= 512)

    files = {os.path.basename(x.strip()) for x in mdir(2).splitlines()}
    dtb = hw["board"]["device_tree"]
    need = {"config.txt", "cmdline.txt", "vmlinuz", "initrd.img", dtb}
    if b == "pi4":
        need |= {"start4.elf", "fixup4.dat"}
    check(f"{b}: boot-a has firmware, kernel, initrd, {dtb}, config.txt, cmdline.txt", need <= files,
          f"missing {sorted(need - files)}" if not need <= files else "")
    # An update bundle carries a boot partition as plain files, at most 64 of them.
    subdirs = [x for x in mdir(2).splitlines() if x.strip().endswith("/")]
    check(f"{b}: boot-a holds plain files only, {len(files)} of them (an update bundle takes up to 64)",
          not subdirs and len(files) <= 64, str(subdirs[:3]))
    cfg = mtype(2, "/config.txt")
    check(f"{b}: config.txt: 64-bit, kernel + initramfs, device tree, watchdog",
          all(s in cfg for s in ("arm_64bit=1", "kernel=vmlinuz", "initramfs initrd.img", f"device_tree={dtb}", "dtparam=watchdog=on")))
    cmdline = mtype(2, "/cmdline.txt")
    check(f"{b}: cmdline.txt mounts root-a read-only by PARTUUID", "root=PARTUUID=c11cb0c5-05 ro" in cmdline
          and "clinicbox.slot=a" in cmdline, cmdline.strip())
    # The Pi 5 boots from SD/USB/NVMe and reaches its Ethernet only through RP1, whose
    # drivers must be in the initramfs (the MIP interrupt controller first).
    initrd = a.image + ".initrd"
    run("mcopy", "-n", "-i", f"{a.image}@@{start(2)}", "::/initrd.img", initrd)
    try:
        names = initramfs_names(initrd)
    finally:
        os.remove(initrd)
    mods = {os.path.basename(n).split(".ko")[0] for n in names if ".ko" in n}
    want = {"irq-bcm2712-mip", "rp1_pci", "clk-rp1", "pinctrl-rp1", "sdhci-brcmstb", "macb"}
    check(f"{b}: initramfs has the Pi 5 RP1/MIP, SD and Ethernet drivers", want <= mods,
          f"missing {sorted(want - mods)}" if not want <= mods else f"{len(mods)} modules")
    check(f"{b}: boot-b is an empty FAT for updates", [x for x in mdir(3).splitlines() if x.strip()] == [])

    # root-a, read-only
    p5 = parts[5]
    off = start(5)
    size = int(re.search(r"size=\s*(\d+)", p5).group(1)) * 512
    mnt = a.image + ".root-a"
    os.makedirs(mnt, exist_ok=True)
    r = run("mount", "-o", f"ro,loop,offset={off},sizelimit={size}", a.image, mnt)
    if r.returncode != 0:
        check(f"{b}: root-a mounts (ext4)", False, r.stderr.strip())
        return
    try:
        with open(f"{mnt}/usr/bin/clinicbox", "rb") as f:
            head = f.read(20)
        check(f"{b}: /usr/bin/clinicbox is an aarch64 ELF", head[:4] == b"\x7fELF" and head[18:20] == b"\xb7\x00")
        env = open(f"{mnt}/usr/lib/clinicbox/storage.env").read()
        cipher = hw["storage"]["cipher"]
        check(f"{b}: data partition will be LUKS2 {cipher}", f"CIPHER='{cipher}'" in env and "DATA_PARTITION='7'" in env
              and "PARTITION_TABLE='dos'" in env, env.replace("\n", " ")[:200])
        units = os.listdir(f"{mnt}/usr/lib/systemd/system")
        want = {"clinicbox.service", "clinicbox-data.service", "data.mount", "clinicbox-firstboot.service", "clinicbox-mark-good.service"}
        check(f"{b}: ClinicBox units installed", want <= set(units), str(sorted(want - set(units))))
        upd = {"clinicbox-update.service", "clinicbox-update.timer", "clinicbox-update-usb.service",
               "clinicbox-update-seed.service"}
        check(f"{b}: update units installed (install into the other slot, from a stick, chunk index)",
              upd <= set(units), str(sorted(upd - set(units))))
        conf = open(f"{mnt}/etc/clinicbox/clinicbox.toml").read()
        disk = DISK_ID[2:]
        check(f"{b}: [update] installs with tryboot into the MBR's partitions by PARTUUID",
              'boot = "rpi-tryboot"' in conf and f'"by-partuuid/{disk}-06"' in conf
              and f'"by-partuuid/{disk}-03"' in conf, re.sub(r"\s+", " ", conf[conf.find("[update]"):])[:200])
        sysconf = open(f"{mnt}/etc/systemd/system.conf.d/clinicbox.conf").read()
        check(f"{b}: RuntimeWatchdogSec={hw['watchdog']['runtime_sec']}s (bcm2835_wdt limit)",
              f"RuntimeWatchdogSec={hw['watchdog']['runtime_sec']}s" in sysconf)
        boot = open(f"{mnt}/usr/lib/clinicbox/boot.env").read()
        check(f"{b}: boot check commits Pi tryboot", "BOOT_SCHEME='rpi-tryboot'" in boot)
        osr = open(f"{mnt}/usr/lib/os-release").read()
        check(f"{b}: version and commit recorded", "IMAGE_VERSION=" in osr and "CLINICBOX_COMMIT=" in osr)
        check(f"{b}: manifest inside", os.path.getsize(f"{mnt}/usr/share/clinicbox/manifest.json") > 1000)
        kmods = run("sh", "-c", f"ls {mnt}/usr/lib/modules/*/kernel/drivers/watchdog/bcm2835_wdt.ko* {mnt}/usr/lib/modules/*/kernel/crypto/adiantum.ko* 2>/dev/null").stdout
        check(f"{b}: kernel has the Pi watchdog and Adiantum", "bcm2835_wdt" in kmods and "adiantum" in kmods, kmods.replace(mnt, "").replace("\n", " "))
    finally:
        run("umount", mnt)
        os.rmdir(mnt)


def cpio_names(data, off=0):
    """Names in the newc cpio archive at data[off:], and the offset after its trailer."""
    names = []
    while data[off:off + 6] == b"070701":
        namesize = int(data[off + 94:off + 102], 16)
        filesize = int(data[off + 54:off + 62], 16)
        name = data[off + 110:off + 110 + namesize - 1].decode("utf-8", "replace")
        off = (off + 110 + namesize + 3) & ~3
        off = (off + filesize + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append(name)
    return names, off


def initramfs_names(path):
    """File names in an initramfs: any leading uncompressed archives, then one
    zstd-compressed archive (rootfs.sh sets COMPRESS=zstd)."""
    data = open(path, "rb").read()
    names, off = [], 0
    while data[off:off + 6] == b"070701":
        more, off = cpio_names(data, off)
        names += more
        while off < len(data) and data[off] == 0:
            off += 1
    if off < len(data):
        rest = subprocess.run(["zstd", "-dc"], input=data[off:], capture_output=True).stdout
        names += cpio_names(rest)[0]
    return names


if __name__ == "__main__":
    main()
    sys.exit(1 if failed else 0)
