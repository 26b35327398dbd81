#!/usr/bin/env python3
"""Boot a Raspberry Pi image's root in qemu-system-aarch64 (virt board).

    image/test/boot_arm64.py --image image/out/clinicbox-pi4-X.img [--work DIR]

QEMU cannot run the Pi firmware, so this boots the kernel, initrd and command
line from the image's boot-a partition directly on the `virt` board, with the
whole image as the disk: everything after the firmware is the image's own
arm64 code (initramfs, systemd, data-setup on the MBR layout, the Pi's LUKS2
cipher, the services). No TPM and no key stick, so the data partition takes the
demo key, which the console must flag as insecure.
"""

import argparse
import os
import re
import shutil
import sys

import image_test as t
from image_test import R, sh


class ArmGuest(t.Guest):
    def __init__(self, work, disk, port, boot, kernel, initrd, cmdline):
        super().__init__(work, disk, port, boot)
        self.kernel, self.initrd, self.cmdline = kernel, initrd, cmdline

    def start_tpm(self):
        pass  # the Pi has none

    def qemu_command(self):
        return [
            "qemu-system-aarch64", "-machine", "virt", "-accel", "tcg,thread=multi", "-cpu", "cortex-a72",
            "-smp", "2", "-m", "1024",
            "-kernel", self.kernel, "-initrd", self.initrd, "-append", self.cmdline,
        ] + self.common_devices()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--boot-timeout", type=int, default=420)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    disk = os.path.join(a.work, "disk.img")
    sh("cp", "--sparse=always", a.image, disk)
    t.inject_agent(disk, partition=5)
    sh("truncate", "-s", "+512M", disk)
    boot_a = int(sh("partx", "-g", "-o", "START", "--nr", "2", disk).split()[0]) * 512
    kernel, initrd = os.path.join(a.work, "vmlinuz"), os.path.join(a.work, "initrd.img")
    sh("mcopy", "-n", "-i", f"{disk}@@{boot_a}", "::/vmlinuz", kernel)
    sh("mcopy", "-n", "-i", f"{disk}@@{boot_a}", "::/initrd.img", initrd)
    cmdline = sh("mtype", "-i", f"{disk}@@{boot_a}", "::/cmdline.txt").strip()
    # The Pi's UART names mean nothing on `virt`: its PL011 is ttyAMA0.
    cmdline = re.sub(r"console=\S+", "", cmdline) + " console=ttyAMA0,115200"
    board = "pi4" if "pi4" in os.path.basename(a.image) else "pi5"
    cipher = "xchacha12,aes-adiantum-plain64" if board == "pi4" else "aes-xts-plain64"

    g = ArmGuest(a.work, disk, t.free_port(), 1, kernel, initrd, cmdline)
    g.start()
    try:
        if t.check_boot_ready(g, f"{board} root on arm64 first boot", a.boot_timeout):
            _, st = g.run("cryptsetup status clinicdata; /usr/lib/clinicbox/data-setup status; findmnt -no SOURCE,FSTYPE /data")
            R.check(f"{board}: data partition is LUKS2 {cipher}, mounted on /data", "LUKS2" in st and cipher in st
                    and "/dev/mapper/clinicdata ext4" in st, st.replace("\n", " | ")[:300])
            R.check(f"{board}: without TPM or key stick the demo key is used", "method=demo" in st)
            R.check(f"{board}: the console warns that the demo key is insecure", "INSECURE DEMO KEY" in g.console())
            _, size = g.run("blockdev --getsize64 /dev/vda7")
            R.check(f"{board}: MBR data partition (logical 7) grew at first boot", size.isdigit() and int(size) > 512 * 2**20,
                    f"{int(size) >> 20} MiB" if size.isdigit() else size)
            _, opts = g.run("findmnt -no OPTIONS /")
            R.check(f"{board}: root slot read-only", opts.split(",")[0] == "ro", opts)
            # QEMU has no UPS HAT: the board's gauge (INA219 on /dev/i2c-1) is absent, and a
            # Pi without its HAT must still run, say so, and bless its slot.
            _, power = g.run("systemctl is-active clinicbox-power.service; "
                             "systemctl show -p NRestarts --value clinicbox-power.service; "
                             "systemctl show -p StatusText --value clinicbox-power.service")
            lines = power.splitlines() + ["", "", ""]
            R.check(f"{board}: without a UPS HAT the power daemon stays up (no restarts)",
                    lines[0] == "active" and lines[1] == "0", " | ".join(lines[:3]))
            ok = t.wait_until(lambda: g.run("systemctl is-active clinicbox-mark-good.service")[1] == "active", 150, 3)
            R.check(f"{board}: boot check passes (no tryboot pending: nothing to commit)", bool(ok))
            page = t.wait_until(lambda: (lambda r: r[1] if r[0] == 200 and "No UPS found" in r[1] else None)(g.http("/")), 60, 3)
            R.check(f"{board}: the status page says no UPS was found", bool(page), g.http("/")[1][-300:] if not page else "")
            _, failed = g.run("systemctl --failed --no-legend --plain")
            R.check(f"{board}: no failed units", failed.strip() == "", failed.replace("\n", " | "))
        R.check(f"{board}: clean poweroff", g.poweroff())
    finally:
        g.cleanup()
    for k, v in R.figures.items():
        print(f"FIGURE {k}: {v}")
    print(f"arm64 boot test: {len(R.passed)} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
