#!/usr/bin/env python3
"""ClinicBox image test: boot the NUC image in QEMU and check it as a box.

    image/test/image_test.py --image image/out/clinicbox-nuc-X.img [--work DIR]

What it does, on a copy of the image (the built image is never changed):
  1. adds the test agent (image/test/agent: a command runner on a virtio-serial
     port, the only difference from the shipped image) and grows the disk by
     1 GiB, as writing the image to a bigger SSD would;
  2. boot 1 (first boot): qemu-system-x86_64, TCG, OVMF (UEFI), swtpm (TPM 2.0),
     i6300esb watchdog, user-mode network with restrict=on and one port forward
     127.0.0.1:PORT -> guest:80. Checks: services READY (serial console),
     /health and GET /api/system/info over the forward, the data partition is
     LUKS2 (sealed to the TPM), grown and mounted, the root slot is read-only,
     the firewall is loaded, the services run sandboxed as their own users, the
     hardware watchdog is armed, boot counting blessed the entry, a SIGSTOPped
     service is restarted by its watchdog; writes records, then `poweroff`;
  3. boot 2: unlocks with the TPM alone, the store opens cleanly with every
     record; then writes continuously and kills QEMU (a power cut);
  4. boot 3: every write the test saw acknowledged is there; the uplink: with the
     USB dongle wan0 down, a patient and a monthly figure are recorded; the uplink
     is pointed at a stand-in national DHIS2 on the host (tests/src/bin/
     national_standin.rs, reached through a guestfwd of the wan0 network); wan0
     comes up shaped by tc netem (800 ms, 20 % loss, 80 kbit/s) and the records
     arrive on national exactly once.
Prints one PASS/FAIL line per check and "N passed, N failed" last; exit 1 on
any failure. Needs root (the agent is copied in through a loop mount).
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
READY_LINE = re.compile(r"Started clinicbox\.service")
# systemd's console lines when clinicbox.service cannot come up (the unit names
# are shortened on the console; the descriptions end the line): stop waiting.
BOOT_FAILED = re.compile(r"(Failed to start|Dependency failed for) .*(ClinicBox LAN service|ClinicBox data|ClinicBox first-boot setup)")
NS = "clinicbox-imagetest"  # dataStore namespace of the records the test writes
# The stand-in national DHIS2 on the host, as the guest's wan0 network sees it.
NATIONAL_GUEST_URL = "http://10.0.3.100:8080"
NATIONAL_TOKEN = "d2pat_ImageTestToken000000000000000123456789"


class National:
    """The stand-in national DHIS2 (built by image-test.sh) on a host port; the guest reaches
    it at NATIONAL_GUEST_URL through a guestfwd (socat per connection) of the wan0 network."""

    def __init__(self, binary, updates=None):
        self.proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--token", NATIONAL_TOKEN]
                                     + (["--updates", updates] if updates else []),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        self.url = line.rsplit(" ", 1)[-1]
        self.port = int(self.url.rsplit(":", 1)[-1])

    def ledger(self):
        with urllib.request.urlopen(f"{self.url}/ledger", timeout=10) as r:
            return json.load(r)

    def faults(self, faults):
        req = urllib.request.Request(f"{self.url}/faults", data=json.dumps(faults).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self):
        self.proc.kill()
        self.proc.wait()


NATIONAL = None
# The store recovery key shown at first setup: the field technician's printed copy.
RECOVERY = {}


def log(msg):
    print(f"[image-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Results:
    def __init__(self):
        self.passed, self.failed, self.notes, self.figures = [], [], [], {}

    def check(self, name, ok, detail=""):
        (self.passed if ok else self.failed).append(name)
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    def note(self, msg):
        self.notes.append(msg)
        print(f"NOTE {msg}", flush=True)


R = Results()


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inject_agent(disk, partition=2):
    """Copy the test agent into root-a of the test copy."""
    start, sectors = sh("partx", "-g", "-o", "START,SECTORS", "--nr", str(partition), disk).split()
    mnt = disk + ".mnt"
    os.makedirs(mnt, exist_ok=True)
    sh("mount", "-o", f"loop,offset={int(start) * 512},sizelimit={int(sectors) * 512}", disk, mnt)
    try:
        a = os.path.join(HERE, "agent")
        shutil.copy(os.path.join(a, "clinicbox-test-agent"), f"{mnt}/usr/local/sbin/")
        os.chmod(f"{mnt}/usr/local/sbin/clinicbox-test-agent", 0o755)
        shutil.copy(os.path.join(a, "clinicbox-test-agent.service"), f"{mnt}/etc/systemd/system/")
        shutil.copy(os.path.join(a, "99-clinicbox-test-agent.rules"), f"{mnt}/etc/udev/rules.d/")
    finally:
        sh("umount", mnt)
        os.rmdir(mnt)


# Every guest started, so a step that fails part-way still stops the machines it started.
STARTED = []


class Guest:
    """One boot of the test disk in QEMU."""

    def __init__(self, work, disk, port, boot):
        self.work, self.disk, self.port, self.boot = work, disk, port, boot
        self.wan_port = free_port()
        self.serial = os.path.join(work, f"serial-{boot}.log")
        self.agent_sock = os.path.join(work, "agent.sock")
        self.mon_sock = os.path.join(work, "monitor.sock")
        self.tpm_sock = os.path.join(work, "swtpm.sock")
        self.qemu = self.swtpm = None
        self.t0 = None
        self.agent_conn = None
        self.agent_buf = b""
        self.agent_seq = 0

    def start(self, keep_serial=False):
        for p in (self.agent_sock, self.mon_sock, self.tpm_sock) + (() if keep_serial else (self.serial,)):
            if os.path.exists(p):
                os.unlink(p)
        self.start_tpm()
        STARTED.append(self)
        self.t0 = time.monotonic()
        self.qemu = subprocess.Popen(self.qemu_command(), stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.work, f"qemu-{self.boot}.log"), "w"))
        log(f"boot {self.boot}: qemu pid {self.qemu.pid}, http://127.0.0.1:{self.port}/ -> guest:80")

    def start_tpm(self):
        tpmstate = os.path.join(self.work, "tpm")
        os.makedirs(tpmstate, exist_ok=True)
        self.swtpm = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tpmstate}",
             "--ctrl", f"type=unixio,path={self.tpm_sock}", "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, "swtpm.log"), "a"))
        for _ in range(50):
            if os.path.exists(self.tpm_sock):
                break
            time.sleep(0.1)

    def common_devices(self):
        """Disk, watchdog, network (one port forward, restrict=on), agent port, serial, monitor."""
        return [
            # writeback: the guest's flushes reach the file; what the guest had
            # not flushed is lost with its RAM when QEMU is killed.
            "-drive", f"file={self.disk},format=raw,if=virtio,cache=writeback,discard=unmap",
            "-device", "i6300esb", "-action", "watchdog=reset",
            "-nic", f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:80",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=agent,path={self.agent_sock},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=org.clinicbox.testagent",
            # append: a power cycle of the same guest (power_cycle) keeps the console so far.
            "-chardev", f"file,id=ser0,path={self.serial},append=on", "-serial", "chardev:ser0",
            "-monitor", f"unix:{self.mon_sock},server=on,wait=off",
            "-display", "none", "-no-user-config", "-nodefaults",
        ]

    def qemu_command(self):
        return [
            "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
            "-smp", "2", "-m", "1536",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={os.path.join(self.work, 'vars.fd')}",
            "-chardev", f"socket,id=chrtpm,path={self.tpm_sock}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
            # An LTE dongle in CDC-Ethernet mode: a USB network device on its own user-mode
            # network, with a port forward to the box's port 80 that the firewall must drop.
            "-device", "qemu-xhci,id=xhci",
            "-netdev", f"user,id=wan,restrict=on,net=10.0.3.0/24,hostfwd=tcp:127.0.0.1:{self.wan_port}-:80"
            + (f",guestfwd=tcp:10.0.3.100:8080-cmd:socat STDIO TCP:127.0.0.1:{NATIONAL.port}" if NATIONAL else ""),
            "-device", "usb-net,netdev=wan,bus=xhci.0",
        ] + self.common_devices()

    def elapsed(self):
        return time.monotonic() - self.t0

    def serial_text(self):
        try:
            with open(self.serial, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def console(self):
        """The serial console so far, without systemd's colour codes."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.serial_text())

    def wait_serial(self, pattern, timeout, fail=BOOT_FAILED):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console()
            if re.search(pattern, text):
                return self.elapsed()
            if fail and fail.search(text):
                log(f"boot {self.boot}: a ClinicBox unit failed, see {self.serial}")
                return None
            if self.qemu.poll() is not None:
                return None
            time.sleep(0.25)
        return None

    # --- HTTP through the port forward ---------------------------------------
    def http(self, path, method="GET", body=None, auth=None, timeout=10, raw=None, headers=None):
        """One request through the port forward: `body` is sent as JSON, `raw` as it is
        (with its Content-Type in `headers`). Redirects are not followed."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if body is not None:
            req.data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if raw is not None:
            req.data = raw
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with NO_REDIRECTS.open(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, OSError) as e:
            return None, str(e)

    def wait_http(self, path, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = self.http(path, timeout=3)
            if status == 200:
                return self.elapsed()
            if self.qemu.poll() is not None:
                return None
            time.sleep(0.5)
        return None

    # --- the test agent --------------------------------------------------------
    def run(self, command, timeout=60):
        """Run a shell command in the guest; returns (rc, output)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.agent_conn is None:
                    self.agent_conn = socket.socket(socket.AF_UNIX)
                    self.agent_conn.connect(self.agent_sock)
                    self.agent_buf = b""
                self.agent_seq += 1
                rid = f"{self.boot}.{self.agent_seq}"
                line = f"{rid} {base64.b64encode(command.encode()).decode()}\n"
                self.agent_conn.sendall(line.encode())
                end = re.compile(rb"@@CLINICBOX-AGENT-END " + re.escape(rid.encode()) + rb" (\d+)@@\n")
                while True:
                    m = end.search(self.agent_buf)
                    if m:
                        out = self.agent_buf[:m.start()]
                        # Drop replies to earlier, timed-out requests.
                        out = out.rsplit(b"@@\n", 1)[-1]
                        self.agent_buf = self.agent_buf[m.end():]
                        return int(m.group(1)), out.decode("utf-8", "replace").rstrip("\n")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"agent: no reply to {command!r}")
                    self.agent_conn.settimeout(min(left, 5))
                    try:
                        chunk = self.agent_conn.recv(65536)
                    except socket.timeout:
                        # QEMU holds the request until the agent opens its port.
                        continue
                    if not chunk:
                        raise ConnectionError("agent socket closed")
                    self.agent_buf += chunk
            except (ConnectionError, FileNotFoundError, ConnectionRefusedError, OSError) as e:
                if self.agent_conn:
                    self.agent_conn.close()
                    self.agent_conn = None
                if time.monotonic() >= deadline or self.qemu.poll() is not None:
                    raise TimeoutError(f"agent unavailable: {e}") from e
                time.sleep(1)

    def run_ok(self, command, timeout=60):
        rc, out = self.run(command, timeout)
        return rc == 0, out

    # --- the QEMU monitor ----------------------------------------------------------
    def monitor(self, command):
        """One HMP command on the monitor socket (device hot-plug); returns what it printed."""
        with socket.socket(socket.AF_UNIX) as m:
            m.settimeout(10)
            m.connect(self.mon_sock)
            out = b""
            while b"(qemu)" not in out:
                out += m.recv(4096)
            m.sendall(command.encode() + b"\n")
            out = b""
            try:
                while out.count(b"(qemu)") < 1:
                    out += m.recv(4096)
            except socket.timeout:
                pass
            return out.decode("utf-8", "replace")

    # --- ending a boot -----------------------------------------------------------
    def wait_exit(self, timeout):
        try:
            self.qemu.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def poweroff(self, timeout=180):
        try:
            self.run("systemctl --no-block poweroff", timeout=20)
        except TimeoutError:
            pass
        ok = self.wait_exit(timeout)
        self.cleanup()
        return ok

    def power_cycle(self):
        """Pulls the plug and powers on again in a new QEMU process (same disk, TPM state,
        firmware variables; the console log goes on): a wedged emulated USB controller that a
        reset does not clear starts fresh, as on hardware the power button would."""
        self.kill()
        self.start(keep_serial=True)

    def kill(self):
        """Power cut: QEMU dies; whatever the guest had not flushed is gone."""
        self.qemu.send_signal(signal.SIGKILL)
        self.qemu.wait()
        self.cleanup()

    def cleanup(self):
        if self.agent_conn:
            self.agent_conn.close()
            self.agent_conn = None
        if self.qemu and self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait()
        if self.swtpm and self.swtpm.poll() is None:
            self.swtpm.terminate()
            try:
                self.swtpm.wait(5)
            except subprocess.TimeoutExpired:
                self.swtpm.kill()


# --- the checks ---------------------------------------------------------------------

def svc(g, unit, *props):
    _, out = g.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(fn, timeout, every=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    return fn()


def check_boot_ready(g, label, timeout):
    t_ready = g.wait_serial(READY_LINE.pattern, timeout)
    R.check(f"{label}: clinicbox.service READY (Type=notify)", t_ready is not None,
            f"{t_ready:.1f} s after power-on" if t_ready else f"not within {timeout} s; see {g.serial}")
    if t_ready:
        R.figures[f"{label} boot-to-READY s"] = round(t_ready, 1)
    t_http = g.wait_http("/health", 60)
    R.check(f"{label}: /health answers through the port forward", t_http is not None,
            f"{t_http:.1f} s after power-on" if t_http else "")
    return t_ready


def check_system_info(g):
    status, body = g.http("/api/system/info")
    if status == 404:
        R.note("/api/system/info not served by this build yet; /health was used instead")
        return
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    R.check("GET /api/system/info answers (DHIS2: 401 WebMessage without credentials)",
            status in (200, 401) and doc is not None, f"HTTP {status}: {body[:160]}")


def check_storage(g, first_boot):
    ok, out = g.run_ok("cryptsetup status clinicdata")
    dev = re.search(r"device:\s+(\S+)", out)
    R.check("data partition is open as /dev/mapper/clinicdata", ok and "LUKS2" in out, out.replace("\n", " | ")[:200])
    if not dev:
        return
    _, dump = g.run(f"cryptsetup luksDump {dev.group(1)}")
    R.check("data partition is LUKS2 with AES-XTS",
            re.search(r"Version:\s+2", dump) is not None and "aes-xts-plain64" in dump, "" if "aes-xts" in dump else dump[:300])
    R.check("data partition key is sealed to the TPM (systemd-tpm2 token)", "systemd-tpm2" in dump,
            "" if "systemd-tpm2" in dump else dump[:300])
    ok, out = g.run_ok("findmnt -no SOURCE,FSTYPE,OPTIONS /data")
    R.check("/data is mounted from the LUKS2 volume (ext4)", ok and out.startswith("/dev/mapper/clinicdata ext4"), out)
    _, size = g.run(f"blockdev --getsize64 {dev.group(1)}")
    grown = size.strip().isdigit() and int(size) > 512 * 2**20
    R.check("data partition grew to the end of the disk at first boot", grown, f"{int(size) >> 20} MiB" if size.strip().isdigit() else size)
    _, status = g.run("/usr/lib/clinicbox/data-setup status")
    R.check("data partition unlock method is tpm2", "method=tpm2" in status, status.replace("\n", " "))


def check_root_readonly(g):
    ok, out = g.run_ok("findmnt -no OPTIONS /")
    R.check("root slot is mounted read-only", ok and out.split(",")[0] == "ro", out)
    rc, out = g.run("touch /usr/lib/clinicbox/.write-test")
    R.check("writing to the root slot fails (read-only file system)", rc != 0 and "Read-only" in out, out)
    _, cmdline = g.run("cat /proc/cmdline")
    R.check("booted from slot A", "clinicbox.slot=a" in cmdline, cmdline)
    _, page = g.http("/")
    R.check("the status page names the system slot it runs from", 'data-figure="slot">(system A)<' in page,
            re.sub(r"<[^>]+>", " ", page)[:200])


def check_units(g):
    p = svc(g, "clinicbox.service", "Type", "WatchdogUSec", "Restart", "User", "MainPID", "ProtectSystem",
            "NoNewPrivileges", "PrivateTmp", "CapabilityBoundingSet", "ReadWritePaths", "ActiveState", "StatusText")
    R.check("clinicbox.service: Type=notify with a watchdog, Restart=always",
            p.get("Type") == "notify" and p.get("WatchdogUSec", "0") not in ("0", "infinity") and p.get("Restart") == "always",
            f"{p.get('Type')} watchdog={p.get('WatchdogUSec')} restart={p.get('Restart')} status={p.get('StatusText')!r}")
    R.check("clinicbox.service: sandboxed (ProtectSystem=strict, NoNewPrivileges, PrivateTmp, only CAP_NET_BIND_SERVICE)",
            p.get("ProtectSystem") == "strict" and p.get("NoNewPrivileges") == "yes" and p.get("PrivateTmp") == "yes"
            and p.get("CapabilityBoundingSet") == "cap_net_bind_service" and "/data/clinicbox" in p.get("ReadWritePaths", ""),
            " ".join(f"{k}={p.get(k)}" for k in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "CapabilityBoundingSet", "ReadWritePaths")))
    m = svc(g, "clinicbox.service", "MemoryHigh", "MemoryMax", "Environment")
    R.check("clinicbox.service: memory bounded by the board profile (MemoryHigh < MemoryMax, glibc tunables)",
            m.get("MemoryHigh", "infinity").isdigit() and m.get("MemoryMax", "infinity").isdigit()
            and int(m["MemoryHigh"]) < int(m["MemoryMax"])
            and "glibc.malloc.mmap_threshold=131072" in m.get("Environment", ""),
            " ".join(f"{k}={m.get(k)}" for k in ("MemoryHigh", "MemoryMax", "Environment")))
    _, user = g.run(f"stat -c %U /proc/{p.get('MainPID', '0')}")
    R.check("clinicbox runs as its own system user", user == "clinicbox", user)
    _, power = g.run("systemctl is-enabled clinicbox-power.service 2>/dev/null; systemctl is-active clinicbox-power.service")
    if "enabled" in power:
        q = svc(g, "clinicbox-power.service", "Type", "WatchdogUSec", "User", "ActiveState")
        R.check("clinicbox-power.service: active, Type=notify with a watchdog, own user",
                q.get("ActiveState") == "active" and q.get("Type") == "notify" and q.get("User") == "clinicbox-power", str(q))
    else:
        R.note("this build has no `clinicbox power`: clinicbox-power.service is not in the image")
    u = svc(g, "clinicbox-uplink.service", "Type", "WatchdogUSec", "User", "ActiveState", "StatusText",
            "ProtectSystem", "CapabilityBoundingSet")
    R.check("clinicbox-uplink.service: active, Type=notify with a watchdog, own user, no capability",
            u.get("ActiveState") == "active" and u.get("Type") == "notify" and u.get("User") == "clinicbox-uplink"
            and u.get("WatchdogUSec", "0") not in ("0", "infinity") and u.get("ProtectSystem") == "strict"
            and u.get("CapabilityBoundingSet", "x") == "", str(u))
    R.check("clinicbox-uplink.service says why it sends nothing (no national_url in the shipped configuration)",
            "not configured" in u.get("StatusText", ""), u.get("StatusText", ""))
    rw = svc(g, "clinicbox-uplink.service", "ReadWritePaths")
    _, staging = g.run("stat -c '%U' /data/uplink-update 2>&1; "
                       "grep -A8 '^\\[uplink.update\\]' /etc/clinicbox/clinicbox.toml | grep '^board'")
    R.check("the uplink may write only its update folder on /data, owned by it, for this board",
            rw.get("ReadWritePaths", "").strip("-") == "/data/uplink-update"
            and staging.startswith("clinicbox-uplink") and 'board = "nuc"' in staging,
            f"{rw} {staging!r}")
    _, sock = g.run("stat -c '%a %U %G' /run/clinicbox-uplink/uplink.sock 2>&1; "
                    "runuser -u clinicbox-power -- test -w /run/clinicbox-uplink/uplink.sock && echo power-can-write; "
                    "journalctl -b -u clinicbox.service --no-pager | grep -i 'uplink socket' | tail -1")
    R.check("uplink socket: 0660 clinicbox:clinicbox-uplink, the power daemon's user cannot use it",
            sock.startswith("660 clinicbox clinicbox-uplink") and "power-can-write" not in sock, sock.replace("\n", " "))
    _, socks = g.run("ss -Hlunp; ss -Hltnp")
    ours = [l for l in socks.splitlines() if '"clinicbox"' in l]
    R.check("clinicbox listens for DNS (53) and mDNS (5353) besides HTTP (80)",
            any(":53 " in l for l in ours) and any(":5353 " in l for l in ours) and any(":80 " in l for l in ours),
            " | ".join(" ".join(l.split()[3:5]) for l in ours)[:240])
    ok, out = g.run_ok("nft list chain inet clinicbox input")
    R.check("nftables: input policy drop, LAN services open on lan0", ok and "policy drop" in out and "lan0" in out, out[:200] if not ok else "")
    _, ifs = g.run("ip -br link")
    R.check("LAN port is named lan0", re.search(r"^lan0\s", ifs, re.M) is not None, ifs.replace("\n", " | "))
    check_uplink_firewall(g)
    _, wd = g.run("cat /sys/class/watchdog/watchdog0/state /sys/class/watchdog/watchdog0/timeout 2>&1; systemctl show -p RuntimeWatchdogUSec")
    R.check("hardware watchdog armed by systemd (RuntimeWatchdogSec)", wd.startswith("active") and "RuntimeWatchdogUSec=30s" in wd,
            wd.replace("\n", " "))
    _, journal = g.run("journalctl --header | grep -E 'File path|Disk usage' ; findmnt -no FSTYPE /var/log; ls /var/log/journal 2>&1 | head -1")
    R.check("journal is volatile (RAM, capped)", "/run/log/journal" in journal, journal.replace("\n", " | ")[:200])
    _, failed = g.run("systemctl --failed --no-legend --plain")
    R.check("no failed units", failed.strip() == "", failed.replace("\n", " | "))


def check_boot_counting(g):
    ok = wait_until(lambda: g.run("systemctl is-active clinicbox-mark-good.service")[1] == "active", 120, 2)
    R.check("clinicbox-mark-good passed (services healthy)", bool(ok), g.run("systemctl status --no-pager -n 5 clinicbox-mark-good.service")[1][-300:] if not ok else "")
    blessed = wait_until(lambda: g.run("systemctl is-active systemd-bless-boot.service")[1] == "active", 60, 2)
    _, entries = g.run("ls /efi/loader/entries/")
    R.check("systemd-bless-boot marked slot A good (entry renamed without its +tries counter)",
            bool(blessed) and entries.split() == ["clinicbox-a.conf"], entries.replace("\n", " "))


def check_watchdog_restart(g):
    p = svc(g, "clinicbox.service", "MainPID", "NRestarts", "WatchdogUSec")
    pid, n0 = p["MainPID"], int(p["NRestarts"])
    g.run(f"kill -STOP {pid}")
    t0 = time.monotonic()

    def restarted():
        q = svc(g, "clinicbox.service", "MainPID", "NRestarts", "ActiveState")
        return q if int(q["NRestarts"]) > n0 and q["MainPID"] not in ("0", pid) and q["ActiveState"] == "active" else None

    q = wait_until(restarted, 150, 2)
    _, why = g.run("journalctl -b -u clinicbox.service --no-pager | grep -iE 'watchdog timeout|result .watchdog' | tail -2")
    R.check("SIGSTOPped clinicbox is killed by its watchdog and restarted", bool(q) and "atchdog" in why,
            f"{time.monotonic() - t0:.0f} s, NRestarts {n0} -> {q['NRestarts'] if q else '?'}; {why.strip()[:160]}")
    R.check("API answers again after the watchdog restart", g.wait_http("/health", 90) is not None)


def check_uplink_firewall(g):
    """The USB "LTE dongle" becomes wan0; nothing inbound answers on it, and the LAN service's
    user cannot send through it."""
    _, ifs = g.run("ip -br link")
    if not R.check("USB Ethernet dongle is named wan0 (uplink)", re.search(r"^wan0\s", ifs, re.M) is not None,
                   ifs.replace("\n", " | ")):
        return
    lan, _ = g.http("/health", timeout=10)
    try:
        with socket.create_connection(("127.0.0.1", g.wan_port), timeout=10) as c:
            c.settimeout(15)
            c.sendall(b"GET /health HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
            answer = c.recv(64)
    except OSError as e:
        answer = f"({type(e).__name__})".encode()
    R.check("firewall: port 80 answers on lan0 and not on wan0 (nothing inbound on the uplink)",
            lan == 200 and not answer.startswith(b"HTTP/"), f"lan0 HTTP {lan}; wan0 {answer[:40]!r}")
    g.run("for i in $(seq 30); do ip -4 -br addr show wan0 | grep -q 10.0.3 && break; sleep 1; done")
    before = nft_drops(g)
    g.run("runuser -u clinicbox -- timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.3.2/80' ; true", timeout=30)
    after = nft_drops(g)
    R.check("firewall: the LAN service's user cannot send through wan0", after > before, f"dropped packets {before} -> {after}")


def nft_drops(g):
    _, out = g.run("nft list chain inet clinicbox output")
    m = re.search(r'skuid .*counter packets (\d+)', out)
    return int(m.group(1)) if m else -1


# --- the uplink: records captured offline reach national once wan0 comes up ------------

def uplink_patient():
    te, en, ev = "teImgTest01", "enImgTest01", "evImgTest01"
    return {
        "trackedEntities": [{"trackedEntity": te, "trackedEntityType": "cbTetPerson", "orgUnit": "cbClinicA01",
                             "attributes": [{"attribute": "cbAttrPatId", "value": "IMG-0001"},
                                            {"attribute": "cbAttrFirst", "value": "Amina"},
                                            {"attribute": "cbAttrLastN", "value": "Otieno"}]}],
        "enrollments": [{"enrollment": en, "trackedEntity": te, "program": "cbPrgOpd001", "orgUnit": "cbClinicA01",
                         "enrolledAt": "2026-12-01T09:00:00.000", "status": "ACTIVE",
                         "attributes": [{"attribute": "cbAttrSex01", "value": "F"},
                                        {"attribute": "cbAttrDob01", "value": "1990-04-02"}],
                         "notes": [{"note": "ntImgTest01", "value": "first visit"}]}],
        "events": [{"event": ev, "enrollment": en, "program": "cbPrgOpd001", "programStage": "cbStgTriage",
                    "orgUnit": "cbClinicA01", "status": "ACTIVE", "occurredAt": "2026-12-01T09:05:00.000",
                    "dataValues": [{"dataElement": "cbDeTriage1", "value": "YELLOW"}],
                    "notes": [{"note": "ntImgTest02", "value": "feverish"}]}],
    }


def point_uplink(g, extra=""):
    """Restarts the uplink with a configuration in /run naming the stand-in (gone at the next
    boot): the shipped one names no national."""
    cfg = (f'[uplink]\nnational_url = "{NATIONAL_GUEST_URL}"\ntoken_file = "/run/clinicbox-test/token"\n'
           'interface = "wan0"\ninterval_secs = 3600\n' + extra + '[discovery]\ninterface = "lan0"\n')
    return g.run_ok(
        "mkdir -p /run/clinicbox-test /run/systemd/system/clinicbox-uplink.service.d && "
        f"printf '%s' '{cfg}' >/run/clinicbox-test/uplink.toml && printf '%s\\n' '{NATIONAL_TOKEN}' >/run/clinicbox-test/token && "
        "chgrp clinicbox-uplink /run/clinicbox-test/token && chmod 0640 /run/clinicbox-test/token && "
        "printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/clinicbox --config /run/clinicbox-test/uplink.toml uplink\\n' "
        ">/run/systemd/system/clinicbox-uplink.service.d/test.conf && "
        "systemctl daemon-reload && systemctl restart clinicbox-uplink.service && systemctl is-active clinicbox-uplink.service",
        timeout=90)


def check_uplink_push(g):
    if NATIONAL is None:
        R.note("uplink push on the image not checked: no national stand-in or socat on this host")
        return
    android = ("android", "Android123")
    # The dongle loses its signal: no default route through wan0.
    g.run("ip link set wan0 down")
    status, body = g.http("/api/tracker?async=false", "POST", uplink_patient(), android, timeout=30)
    _, info = g.http("/api/system/info", auth=android)
    pe = json.loads(info)["serverDate"][:7].replace("-", "") if info.startswith("{") else ""
    s2, _ = g.http("/api/dataValueSets", "POST", {"dataSet": "cbDsOpdMon1", "dataValues": [
        {"dataElement": "cbDeAggOpd1", "period": pe, "orgUnit": "cbClinicA01", "categoryOptionCombo": "cbCocFemale",
         "attributeOptionCombo": "HllvX50cXC0", "value": "42"}]}, android, timeout=30)
    R.check("uplink: a patient and a monthly figure recorded while wan0 is down", status == 200 and s2 == 200,
            f"tracker HTTP {status}, dataValueSets HTTP {s2}: {body[:160]}")
    # Point the uplink at the stand-in (the shipped configuration names no national).
    ok, out = point_uplink(g)
    R.check("uplink: restarted with a national to send to", ok, out[-200:])
    time.sleep(6)
    early = NATIONAL.ledger()
    _, st = g.run("systemctl show -p StatusText --value clinicbox-uplink.service")
    R.check("uplink: nothing is sent while wan0 has no route; the unit says it waits for the link",
            not early.get("events") and "waiting for the WAN link" in st, f"{len(early.get('events', {}))} events; {st}")
    # A bad LTE day on the dongle's way out (the build host's kernel lacks sch_netem; the
    # image's has it): 800 ms delay, 20 % loss, 80 kbit/s.
    ok, out = g.run_ok("tc qdisc replace dev wan0 root netem delay 800ms loss 20% rate 80kbit "
                       "&& tc qdisc show dev wan0")
    R.check("uplink: wan0 shaped like a bad LTE day (tc netem: 800 ms, 20 % loss, 80 kbit/s)",
            ok and "netem" in out, out[-200:])
    g.run("ip link set wan0 up")
    t0 = time.monotonic()
    led = wait_until(lambda: (lambda l: l if l.get("events") and l.get("data_values") else None)(NATIONAL.ledger()), 240, 3)
    led = led or NATIONAL.ledger()
    ev = led.get("events", {}).get("evImgTest01", {})
    R.check("uplink: once wan0 is up, the offline records reach national exactly once, through netem",
            ev.get("writes") == 1 and len(led.get("notes", {})) == 2 and len(led.get("data_values", {})) == 1
            and "teImgTest01" in led.get("tracked_entities", {}),
            f"{time.monotonic() - t0:.0f} s after link up; events {list(led.get('events', {}))}, "
            f"notes {len(led.get('notes', {}))}, values {len(led.get('data_values', {}))}, requests {led.get('requests')}")
    R.figures["uplink: link up to records on national s"] = round(time.monotonic() - t0, 1)

    # National applies a batch before its answer crosses the slow link back and the round ends
    # (pull and check-in included): the page is asked until the round is done, within a bound.
    def uplink_view():
        status, body = g.http("/status.json", auth=("imagetest", "ImageTest-2026!"))
        return json.loads(body).get("uplink", {}) if status == 200 else {}

    up = wait_until(lambda: (lambda u: u if u.get("pending") == {} and u.get("lastSuccessMs") else None)(uplink_view()),
                    240, 3) or uplink_view()
    R.check("uplink: the status page shows nothing pending and when national last confirmed",
            up.get("pending") == {} and up.get("lastSuccessMs"), str(up)[:200])


# --- backup to a USB stick, restore on a replacement ----------------------------------

STICK = "/media/clinicbox/stick"


def check_backup_button(g, work, admin):
    """A clinic lead plugs a FAT stick in and presses "Back up now"; then pulls the stick out.
    Returns the stick's image file (read on the host once QEMU is gone)."""
    stick = os.path.join(work, "stick.img")
    sh("truncate", "-s", "64M", stick)
    sh("mkfs.vfat", "-n", "CLINICBOX", stick)
    g.monitor(f"drive_add 0 if=none,id=stick,format=raw,file={stick}")
    g.monitor("device_add usb-storage,id=stickdev,drive=stick,bus=xhci.0,removable=on")
    mounted = wait_until(lambda: (lambda r: r[1] if r[0] == 0 else None)(
        g.run(f"findmnt -no FSTYPE,OPTIONS {STICK}")), 60, 2)
    opts = (mounted or "").split()
    R.check("backup: a USB stick plugged in is mounted for backups only (FAT, noexec, nosuid, nodev)",
            bool(opts) and opts[0] == "vfat" and all(o in opts[1].split(",") for o in ("noexec", "nosuid", "nodev")),
            mounted or "not mounted")
    origin = {"Origin": f"http://127.0.0.1:{g.port}", "Content-Type": "application/x-www-form-urlencoded"}
    auth = {"Authorization": "Basic " + base64.b64encode(f"{admin[0]}:{admin[1]}".encode()).decode()}
    _, page = g.http("/admin", headers=auth)
    R.check("backup: the admin page offers to back up to the stick", "Back up to the USB stick now" in page,
            re.sub(r"<[^>]+>", " ", page)[-300:])
    t = time.monotonic()
    status, _ = g.http("/admin/backup", "POST", raw=b"", headers={**origin, **auth}, timeout=300)
    R.figures["backup to a USB stick in QEMU s"] = round(time.monotonic() - t, 1)
    _, page = g.http("/admin", headers=auth)
    said = re.search(r'<p class="(ok|bad)" data-figure="backup-said">([^<]*)<', page)
    R.check("backup: one button writes the backup and says so", status == 303 and said and said.group(1) == "ok",
            f"HTTP {status}: {said.group(2) if said else 'nothing said'}")
    _, listing = g.run(f"ls -l {STICK}")
    st, body = g.http("/status.json", auth=admin)
    last = (json.loads(body).get("backup") or {}) if st == 200 else {}
    R.check("backup: the status page shows the last backup's time, size and stick",
            last.get("bytes", 0) > 0 and last.get("folder") == STICK and ".backup" in listing,
            f"{last}; {listing[-200:]}")
    g.monitor("device_del stickdev")
    gone = wait_until(lambda: g.run(f"findmnt {STICK}")[0] != 0, 60, 2)
    R.check("backup: the stick pulled out is unmounted", gone)
    return stick


def box_identity(g, admin):
    """What a tablet and the technician know the box by."""
    _, info = g.http("/api/system/info", auth=admin)
    _, status = g.http("/status.json", auth=admin)
    try:
        i, s = json.loads(info), json.loads(status)
    except ValueError:
        return {}
    return {"systemId": i.get("systemId"), "box": s.get("info", {}).get("box_id"),
            "certificate": (s.get("certificate") or {}).get("sha256")}


def multipart(fields, files):
    boundary = "clinicbox-image-test-boundary"
    body = b""
    for name, value in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, (filename, data) in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def check_restore_on_replacement(image, work, stick, api, acked, before, boot_timeout):
    """A field technician brings a new box (a fresh copy of the image), and restores the old
    box's backup on its first-setup page with the printed recovery key."""
    names = sh("mdir", "-b", "-i", stick, "::/").split()
    backups = sorted(n for n in names if n.endswith(".backup") or n.endswith(".BACKUP"))
    local = os.path.join(work, "old-box.backup")
    if backups:
        sh("mcopy", "-n", "-i", stick, backups[-1], local)
    size = os.path.getsize(local) if backups else 0
    # A clinic lead pulls the stick out as soon as the page says "Backed up": the whole file
    # must be on it by then, not only its name.
    R.check("backup: the whole file is on the stick pulled out right after the button", size > 0,
            f"{names}: {size} bytes")
    if not size or not RECOVERY.get("store"):
        return
    work2 = os.path.join(work, "replacement")
    os.makedirs(work2, exist_ok=True)
    disk = os.path.join(work2, "disk.img")
    sh("cp", "--sparse=always", image, disk)
    inject_agent(disk)
    sh("truncate", "-s", "+1G", disk)
    shutil.copy(OVMF_VARS, os.path.join(work2, "vars.fd"))
    g = Guest(work2, disk, free_port(), 4)
    g.start()
    try:
        if not check_boot_ready(g, "replacement's first boot", boot_timeout):
            return
        _, page = g.http("/setup")
        R.check("replacement: the first-setup page offers a restore beside setting up", 'data-figure="restore-form"' in page)
        body, ctype = multipart({"key": RECOVERY["store"]}, {"backup": ("old-box.backup", open(local, "rb").read())})
        t = time.monotonic()
        status, page = g.http("/setup/restore", "POST", raw=body, timeout=600,
                              headers={"Origin": f"http://127.0.0.1:{g.port}", "Content-Type": ctype})
        restored = status == 200 and 'data-figure="restored"' in page
        R.check("replacement: the backup restores with the old box's printed recovery key", restored,
                f"HTTP {status}: {re.sub(r'<[^>]+>', ' ', page)[-300:]}")
        if not restored:
            return
        back = wait_until(lambda: g.http("/api/me", auth=api.auth)[0] == 200, 240, 3)
        R.figures["restore on the first-setup page, to the old admin logging in s"] = round(time.monotonic() - t, 1)
        R.check("replacement: serve restarts on the restored data; the old box's admin logs in", back)
        after = box_identity(g, api.auth)
        R.check("replacement: same system id, box name and certificate as the old box (tablets keep their URL)",
                after == before and before.get("certificate"), f"{before} -> {after}")
        miss = missing_records(g, api, acked)
        R.check("replacement: every record the old box acknowledged before its backup is there",
                not miss and acked, f"{len(acked)} checked, missing {miss[:10]}")
        st, te = g.http("/api/tracker/trackedEntities/teImgTest01?program=cbPrgOpd001&fields=trackedEntity,enrollments",
                        auth=("android", "Android123"))
        R.check("replacement: a tablet downloads the clinic's patient", st == 200 and "enImgTest01" in te, f"HTTP {st}: {te[:200]}")
        st, body = g.http("/status.json", auth=api.auth)
        up = json.loads(body).get("uplink", {}) if st == 200 else {}
        R.check("replacement: nothing the old box sent waits to be sent again", up.get("pending") == {}, str(up)[:200])
        g.poweroff()
    finally:
        g.cleanup()


# --- updates: a signed release through wan0, a broken one from a USB stick --------------

UPDATES = {}  # repo, keys, good, bad: set from the command line (image-test.sh)
MIRROR = f"{NATIONAL_GUEST_URL}/updates/"


def make_bundle(image, work, name):
    """A release for the test: the image with the test agent in its slot A (so the test can
    still talk to the box that runs it), bundled and signed into the test's repository by
    `./build.sh bundle`, as a release manager would."""
    copy = os.path.join(work, name + ".img")
    sh("cp", "--sparse=always", image, copy)
    inject_agent(copy)
    try:
        out = sh(os.path.join(HERE, "../../build.sh"), "bundle", "--target", "nuc", "--image", copy,
                 "--repo", UPDATES["repo"], "--keys", UPDATES["keys"], "--out", work)
        return out.strip().splitlines()[-1]
    finally:
        os.unlink(copy)


def boot_id(g):
    try:
        rc, out = g.run("cat /proc/sys/kernel/random/boot_id", timeout=10)
    except TimeoutError:
        return None
    return out.strip() if rc == 0 else None


# OVMF under TCG sometimes hangs at a reset (the kernel says "machine restart" and nothing
# boots; seen with the USB devices attached, never on hardware). The harness then resets the
# machine through QEMU's monitor, as the reset button would, and if that does not help either
# (the emulated USB controller stays wedged), power-cycles it; each is counted.
RESET_HANG_S = 150


def unstick_reset(g, stuck):
    """If the last restart on the console has had no kernel after it for RESET_HANG_S, reset
    the machine, then power-cycle it; `stuck` is (console offset, since, resets done) of the
    restart being watched."""
    con = g.console()
    at = con.rfind("reboot: machine restart")
    if at < 0 or "Linux version" in con[at:]:
        return None
    if not stuck or stuck[0] != at:
        return (at, time.monotonic(), 0)
    if time.monotonic() - stuck[1] <= RESET_HANG_S:
        return stuck
    if stuck[2] == 0:
        log(f"no kernel {RESET_HANG_S} s after a restart (OVMF under TCG): system_reset through the monitor")
        g.monitor("system_reset")
        key = "firmware hangs at a reset worked around (OVMF under TCG)"
    else:
        log(f"still no kernel after a system_reset: power-cycling the machine (a new QEMU process)")
        g.power_cycle()
        key = "firmware hangs at a reset that needed a power cycle (OVMF under TCG)"
    R.figures[key] = R.figures.get(key, 0) + 1
    return (at, time.monotonic(), stuck[2] + 1)


def wait_next_boot(g, before, timeout, slot, unit=None):
    """The guest restarts by itself (same QEMU), maybe several times: wait until the agent
    answers from a boot other than `before`, of `slot`; returns (boot id, command line). While
    the old boot still answers, a failed `unit` (the installer) ends the wait with its log."""
    deadline = time.monotonic() + timeout
    stuck = None
    while time.monotonic() < deadline and g.qemu.poll() is None:
        stuck = unstick_reset(g, stuck)
        try:
            rc, out = g.run("cat /proc/sys/kernel/random/boot_id /proc/cmdline", timeout=max(5, min(30, deadline - time.monotonic())))
        except TimeoutError:
            continue
        lines = out.splitlines()
        if rc == 0 and len(lines) >= 2 and lines[0] != before and f"clinicbox.slot={slot}" in lines[1]:
            return lines[0], lines[1]
        if unit and rc == 0 and lines and lines[0] == before:
            rc2, _ = g.run(f"systemctl is-failed --quiet {unit}", timeout=20)
            if rc2 == 0:
                _, why = g.run(f"journalctl -b -u {unit} -o cat | tail -8", timeout=20)
                return None, f"{unit} failed: {why}".replace("\n", " | ")
        time.sleep(3)
    return None, ""


def entries(g):
    return sorted(g.run("ls /efi/loader/entries")[1].split())


def healthy(g, timeout):
    def marked_good():
        try:
            return g.run("systemctl is-active clinicbox-mark-good.service", timeout=30)[1] == "active"
        except TimeoutError:  # not up yet, or not coming up: the caller's check says so
            return False
    return wait_until(marked_good, timeout, 3)


def power_cut(g, work, port, boot_timeout, when):
    """Kills the machine (a power cut `when`) and powers it on again: the new guest, once it is
    ready, and its kernel command line; (None, "") if it never became ready."""
    log(f"power cut {when}")
    g.kill()
    g = Guest(work, g.disk, port, g.boot + 1)
    g.start()
    if not check_boot_ready(g, f"boot after a power cut {when}", boot_timeout):
        return None, ""
    return g, g.run("cat /proc/cmdline")[1]


# Chunks the mirror answers before the link goes quiet in the download that is cut.
CHUNKS_BEFORE_CUT = 30


def staged_line(g):
    """What the status page says of the update, or None."""
    st, body = g.http("/status.json", auth=("imagetest", "ImageTest-2026!"))
    return (json.loads(body).get("uplink") or {}).get("update") if st == 200 else None


def chunk_requests():
    """The mirror's chunk requests so far: how many times each chunk was answered (a held
    request released after the power cut answered nobody: not counted), and whether one is
    being held now."""
    counts, holding = {}, False
    for r in NATIONAL.ledger().get("update_requests", []):
        if not r["path"].startswith("targets/chunks/"):
            continue
        holding = holding or not r.get("answered")
        if r.get("answered") and not r.get("held"):
            counts[r["path"]] = counts.get(r["path"], 0) + 1
    return counts, holding


def cut_download(g, work, port, boot_timeout, mirror):
    """The mirror answers CHUNKS_BEFORE_CUT chunks and then goes quiet; the machine is killed
    mid-download. It must come back on slot A; returns the new guest, uplink pointed again."""
    NATIONAL.faults({"hold_update_chunks_after": CHUNKS_BEFORE_CUT})
    ok, out = point_uplink(g, mirror)
    R.check("update: the uplink checks the mirror through wan0", ok, out[-200:])
    held = wait_until(lambda: (lambda c: len(c[0]) >= CHUNKS_BEFORE_CUT and c[1])(chunk_requests()), 600, 2)
    # The last answered chunks are written and synced on the box within moments.
    time.sleep(5)
    g, cmdline = power_cut(g, work, port, boot_timeout,
                           f"during the download ({len(chunk_requests()[0])} chunks answered)")
    if not g:
        return None
    R.check("update: killed during the download, the box boots slot A as before",
            bool(held) and "clinicbox.slot=a" in cmdline and entries(g) == ["clinicbox-a.conf"],
            f"held seen={bool(held)}; {entries(g)}; {cmdline[-80:]}")
    NATIONAL.faults({"hold_update_chunks_after": None})
    ok, out = point_uplink(g, mirror)
    R.check("update: after the power cut the uplink checks the mirror again", ok, out[-200:])
    return g


def stage_release(g, version, work, port, boot_timeout):
    """Once slot A's chunks are indexed, the uplink, pointed at the stand-in's update mirror,
    downloads and verifies `version`: only the chunks slot A lacks. The first download is cut
    by a power cut and resumed after it. Returns the guest, or None."""
    t = time.monotonic()
    seed = wait_until(lambda: g.run("test -s /data/update/slot-a.chunks")[0] == 0, 900, 5)
    _, said_seed = g.run("journalctl -u clinicbox-update-seed.service -o cat | tail -3")
    R.check("update: after a healthy boot, slot A is cut into chunks (clinicbox-update-seed)",
            bool(seed), said_seed.replace("\n", " | ")[-200:])
    R.figures["update: cutting slot A into chunks, waited s (TCG)"] = round(time.monotonic() - t, 1)
    mirror = f'[uplink.update]\nmirror_url = "{MIRROR}"\nboard = "nuc"\n'
    g = cut_download(g, work, port, boot_timeout, mirror)
    if not g:
        return None
    line = wait_until(lambda: (lambda u: u if u and "ready to install" in u else None)(staged_line(g)), 600, 5) \
        or staged_line(g)
    R.check(f"update: the uplink stages {version}, downloaded and verified", bool(line) and version in line, str(line))
    answered = chunk_requests()[0]
    again = {p: n for p, n in answered.items() if n > 1}
    R.check(f"update: the download resumes after the power cut: none of the {CHUNKS_BEFORE_CUT} chunks "
            "staged before it is fetched again", len(answered) > CHUNKS_BEFORE_CUT and not again,
            f"{len(answered)} chunks answered; twice: {sorted(again)[:5]}")
    sizes = re.search(r"\(([\d.]+) MB of the release's ([\d.]+) MB", line or "")
    R.check("update: it downloads only the chunks slot A lacks, not the whole release",
            bool(sizes) and "the rest is in the running slot" in line, str(line))
    if sizes:
        fetched, whole = float(sizes.group(1)), float(sizes.group(2))
        R.figures["update: downloaded for a release, MB (chunks slot A lacks)"] = fetched
        R.figures["update: the release's bundle, MB"] = whole
        R.figures["update: downloaded / bundle, ratio (RAUC publishes about 0.10)"] = round(fetched / whole, 3)
    return g if bool(line) and "ready to install" in line else None


def check_update_cut_and_installed(g, work, port, boot_timeout, good):
    """Installs the staged release with the machine killed while the slot is written (the box
    must come back on slot A), then again to the end: slot B boots and is marked good.
    Returns the guest running slot B."""
    t0 = time.monotonic()
    g.run("systemctl start --no-block clinicbox-update.service")
    # The boot files go first, then the root image: cut a few seconds into the root.
    writing = wait_until(lambda: g.run("test -s /efi/clinicbox/b/initrd.img")[0] == 0
                         and g.run("systemctl is-active clinicbox-update.service")[1] == "activating", 180, 1)
    time.sleep(5)
    g, cmdline = power_cut(g, work, port, boot_timeout, "while slot B is written")
    if not g:
        return None
    # The third power cut since the TPM was last reset by hand: swtpm locks a DA-protected
    # key out after three (bookworm's systemd-cryptenroll seals without noDA).
    _, data_log = g.run("journalctl -b -u clinicbox-data.service -o cat")
    R.check("power cuts do not lock the TPM out: the data key unseals after the third "
            "(the dictionary-attack counter is reset before each unlock)",
            "key: tpm2" in data_log and "could not reset" not in data_log,
            data_log.replace("\n", " | ")[-300:])
    R.check("update: killed while writing slot B, the box comes back on slot A with only A's entry",
            bool(writing) and "clinicbox.slot=a" in cmdline and entries(g) == ["clinicbox-a.conf"],
            f"writing seen={bool(writing)}; {entries(g)}; {cmdline[-80:]}")
    # The staged release is still there: the installer starts over (the timer would).
    healthy(g, 180)
    before = boot_id(g)
    g.run("mkdir -p /run/systemd/system/clinicbox-update.service.d && printf '[Service]\\nExecStart=\\n"
          "ExecStart=/usr/bin/clinicbox --config /etc/clinicbox/clinicbox.toml update install --reboot now\\n' "
          ">/run/systemd/system/clinicbox-update.service.d/test.conf && systemctl daemon-reload && "
          "systemctl start --no-block clinicbox-update.service")
    _, cmdline = wait_next_boot(g, before, 900, "b", "clinicbox-update.service")
    R.check(f"update: {good} written into slot B, checked, and the box restarts into it",
            "clinicbox.slot=b" in cmdline, cmdline[-600:] or "no restart")
    good_ok = healthy(g, 300)
    blessed = wait_until(lambda: entries(g) == ["clinicbox-a.conf", "clinicbox-b.conf"], 120, 3)
    _, release = g.run("sed -n s/^IMAGE_VERSION=//p /usr/lib/os-release")
    R.check(f"update: slot B runs {good}, is healthy and marked good (entry blessed)",
            bool(good_ok) and bool(blessed) and release.strip() == good,
            f"{entries(g)}; IMAGE_VERSION={release.strip()}")
    R.figures["update: staged release to slot B marked good in QEMU s"] = round(time.monotonic() - t0, 1)
    return g


def last_rollback(g):
    """The installer's last rollback, as `clinicbox update status` says it ({} when none)."""
    _, state = g.run("clinicbox --config /etc/clinicbox/clinicbox.toml update status")
    try:
        return json.loads(state).get("lastRollback") or {}
    except ValueError:
        return {}


def update_stick(work, version, name):
    """A FAT stick image with the repository's metadata and `version`'s bundle in
    clinicbox-update/, as a technician copies it."""
    stick = os.path.join(work, name)
    sh("truncate", "-s", "640M", stick)
    sh("mkfs.vfat", "-F", "32", "-n", "CLINICUPD", stick)
    repo = UPDATES["repo"]
    staged = os.path.join(work, "stick", "clinicbox-update")
    shutil.rmtree(os.path.join(work, "stick"), ignore_errors=True)
    os.makedirs(os.path.join(staged, "targets"))
    shutil.copytree(os.path.join(repo, "metadata"), os.path.join(staged, "metadata"))
    for f in os.listdir(os.path.join(repo, "targets")):
        if f.endswith(f"-{version}.bundle"):
            shutil.copy(os.path.join(repo, "targets", f), os.path.join(staged, "targets", f))
    sh("mcopy", "-s", "-i", stick, staged, "::/")
    shutil.rmtree(os.path.join(work, "stick"))
    return stick


def stick_installs_without_restart(g):
    """OVMF under TCG hangs at a reset with a hot-plugged USB stick still in (seen here, not on
    hardware): the test restarts the box itself once the stick is out, instead of the unit."""
    g.run("mkdir -p /run/systemd/system/clinicbox-update-usb.service.d && printf '[Service]\\nExecStart=\\n"
          "ExecStart=/usr/bin/clinicbox --config /etc/clinicbox/clinicbox.toml update install "
          "--from /media/clinicbox/stick/clinicbox-update --reboot never\\n' "
          ">/run/systemd/system/clinicbox-update-usb.service.d/test.conf && systemctl daemon-reload")


def check_update_rolls_back(g, work, bad):
    """A technician's USB stick carries a release whose clinicbox fails: it installs into
    slot A, fails its boot check three times, and the box is back on slot B by itself with
    the reason recorded, reported in the next check-in and never installed again."""
    stick = update_stick(work, bad, "update-stick.img")
    stick_installs_without_restart(g)
    t0 = time.monotonic()
    plug_stick(g, stick, "updstick")
    said = wait_until(lambda: (lambda o: o if "installed " in o or "failed" in o.lower() else None)(
        g.run("journalctl -b -u clinicbox-update-usb.service -o cat")[1]), 900, 5) or ""
    R.check(f"update: a USB stick with {bad} in clinicbox-update/ installs it into slot A by itself",
            f"installed {bad} into slot A" in said and "clinicbox-a+3.conf" in entries(g),
            said.replace("\n", " | ")[-300:])
    unplug_stick(g, "updstick")
    serial_before = len(g.console())
    before = boot_id(g)
    g.run("systemctl --no-block reboot")
    _, cmdline = wait_next_boot(g, before, 1200, "b")
    back = "clinicbox.slot=b" in cmdline
    tries = g.console()[serial_before:].count("Linux version")
    R.check(f"update: {bad} fails its boot check in slot A and, its 3 tries spent, the box is back "
            "on slot B by itself",
            back and tries >= 4, f"{tries - 1} boots of slot A, then {cmdline[-600:]}")
    R.figures["update: broken release, restart to the box back on slot B s"] = round(time.monotonic() - t0, 1)
    healthy(g, 300)
    rb = last_rollback(g)
    R.check("update: the rollback is recorded with the reason slot A's boot check gave",
            rb.get("version") == bad and rb.get("slot") == "a" and "clinicbox.service is not active" in (rb.get("reason") or "")
            and entries(g) == ["clinicbox-a+0-3.conf", "clinicbox-b.conf"],
            f"{rb}; {entries(g)}")
    st, page = g.http("/")
    R.check("update: the status page says which update was undone and why",
            st == 200 and f'data-figure="rollback">{bad} did not start well' in page,
            re.sub(r"<[^>]+>", " ", page)[-200:] if st == 200 else f"HTTP {st}")
    # The technician plugs the same stick in again: refused, nothing written, no restart.
    plug_stick(g, stick, "updstick2")
    usb = wait_until(lambda: (lambda o: o if "not installed again" in o or "installed " in o else None)(
        g.run("journalctl -b -u clinicbox-update-usb.service -o cat")[1]), 300, 5) or ""
    R.check(f"update: {bad}, which came back, is not installed again from the stick",
            "not installed again" in usb and entries(g) == ["clinicbox-a+0-3.conf", "clinicbox-b.conf"],
            usb.replace("\n", " | ")[-200:])
    unplug_stick(g, "updstick2")
    return rb


def publish_tool():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "../../target")
    return os.path.join(target, "debug", "clinicbox-publish")


def make_rootless_release(work, good_bundle, version):
    """A signed release whose root slot holds no file system (a wrong image, a bad build): the
    good release's kernel, initrd and command line, and 64 MiB of zeros for a root."""
    d = os.path.join(work, "rootless")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    sh("tar", "-xf", good_bundle, "-C", d, "bundle.json", "boot/vmlinuz", "boot/initrd.img")
    with open(os.path.join(d, "bundle.json")) as f:
        cmdline = json.load(f)["cmdline"]
    root = os.path.join(d, "root.img")
    with open(root, "wb") as f:
        f.truncate(64 << 20)
    out = os.path.join(work, f"clinicbox-nuc-{version}.bundle")
    sh(publish_tool(), "bundle", "--board", "nuc", "--version", version, "--root", root,
       "--boot", os.path.join(d, "boot/vmlinuz"), "--boot", os.path.join(d, "boot/initrd.img"),
       "--cmdline", cmdline, "--out", out)
    sh(publish_tool(), "add", "--repo", UPDATES["repo"], "--keys", UPDATES["keys"], "--file", out,
       "--board", "nuc", "--version", version)
    shutil.rmtree(d)


def refusal_folders(work, version):
    """Repository folders a stick might carry that must each be refused, made from the test's
    repository (which offers `version`, newer than what runs): the bundle tampered with, the
    timestamp expired, only an older release, and a timestamp from another publication."""
    repo, keys = UPDATES["repo"], UPDATES["keys"]
    base = os.path.join(work, "refusals")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    # The older release goes into the repository itself: a folder signed apart from it would
    # be trusted once verified, and the repository's next stick would then look replayed.
    with open(os.path.join(base, "older.bin"), "wb") as f:
        f.write(b"an older release")
    sh(publish_tool(), "add", "--repo", repo, "--keys", keys, "--file", os.path.join(base, "older.bin"),
       "--board", "nuc", "--version", "0.0.9")
    os.unlink(os.path.join(base, "older.bin"))

    def copy(name, releases):
        d = os.path.join(base, name)
        shutil.copytree(os.path.join(repo, "metadata"), os.path.join(d, "metadata"))
        os.makedirs(os.path.join(d, "targets"))
        for f in os.listdir(os.path.join(repo, "targets")):
            if any(f.endswith(f"-{v}.bundle") for v in releases):
                shutil.copy(os.path.join(repo, "targets", f), os.path.join(d, "targets", f))
        return d

    tampered = copy("refuse-tampered", [version])
    for f in os.listdir(os.path.join(tampered, "targets")):
        with open(os.path.join(tampered, "targets", f), "r+b") as b:
            b.seek(os.path.getsize(b.name) // 2)
            byte = b.read(1)
            b.seek(-1, 1)
            b.write(bytes([byte[0] ^ 0xFF]))
    expired = copy("refuse-expired", [version])
    sh(publish_tool(), "refresh", "--repo", expired, "--keys", keys, "--timestamp-days=-1")
    copy("refuse-older", ["0.0.9"])
    # Two publications after this one, one in each copy: the timestamp of one names a
    # snapshot the other folder holds under the same version with other contents.
    mixed, other = copy("refuse-mixed", [version]), copy("other-publication", [version])
    for d, body in ((mixed, b"one"), (other, b"another")):
        extra = os.path.join(base, "extra.bin")
        with open(extra, "wb") as f:
            f.write(body)
        sh(publish_tool(), "add", "--repo", d, "--keys", keys, "--file", extra, "--board", "pi5", "--version", "9.9.9")
    shutil.copy(os.path.join(other, "metadata", "timestamp.json"), os.path.join(mixed, "metadata", "timestamp.json"))
    shutil.rmtree(other)
    os.unlink(os.path.join(base, "extra.bin"))
    return base


def check_refusals(g, work, version):
    """Each folder from `refusal_folders`, installed from a stick as a technician would run it:
    refused, the running slot's entry and the installer's trusted metadata as they were."""
    base = refusal_folders(work, version)
    stick = os.path.join(work, "refusals-stick.img")
    sh("truncate", "-s", "640M", stick)
    sh("mkfs.vfat", "-F", "32", "-n", "CLINICREF", stick)
    for name in sorted(os.listdir(base)):
        sh("mcopy", "-s", "-i", stick, os.path.join(base, name), "::/")
    plug_stick(g, stick, "refusals")
    wait_until(lambda: g.run(f"test -d {STICK}/refuse-older")[0] == 0, 120, 2)
    trusted = "sha256sum /data/update/trusted/*.json"
    _, trusted_before = g.run(trusted)
    running_entry = "clinicbox-b.conf"
    # Metadata that does not verify first: nothing of it may be trusted. Then a genuine
    # repository whose bundle was tampered with, and one that offers only an older release.
    expect = {"refuse-expired": "expired", "refuse-mixed": "does not verify",
              "refuse-tampered": "the bundle:", "refuse-older": "nothing newer"}
    for name, why in expect.items():
        if name == "refuse-tampered":
            _, trusted_after = g.run(trusted)
            R.check("update: nothing an expired or mixed repository said is trusted (the installer's "
                    "metadata unchanged)",
                    trusted_before == trusted_after and trusted_before.strip() != "", trusted_after.strip()[:200])
        rc, out = g.run(f"clinicbox --config /etc/clinicbox/clinicbox.toml update install "
                        f"--from {STICK}/{name} --reboot never 2>&1", timeout=600)
        now = entries(g)
        other_bootable = any(e.startswith("clinicbox-a") and "+0-" not in e for e in now)
        R.check(f"update: a stick's {name[len('refuse-'):]} repository is refused; slot B's entry stays "
                "and slot A is not made bootable",
                why in out and running_entry in now and not other_bootable,
                f"rc {rc}: {out.strip().splitlines()[-1:] if out.strip() else ''}; {now}")
    unplug_stick(g, "refusals")
    shutil.rmtree(base)


def check_initramfs_failure_rolls_back(g, work, version):
    """A release whose root cannot be mounted fails in the initramfs, before systemd and the
    boot check run: `panic=10` makes initramfs-tools restart, each restart spends a try, and
    the box is back on slot B by itself, the rollback recorded as one that never started."""
    stick = update_stick(work, version, "rootless-stick.img")
    stick_installs_without_restart(g)
    plug_stick(g, stick, "rootless")
    said = wait_until(lambda: (lambda o: o if f"installed {version}" in o or "failed" in o.lower() else None)(
        g.run("journalctl -b -u clinicbox-update-usb.service -o cat")[1]), 600, 5) or ""
    unplug_stick(g, "rootless")
    serial_before = len(g.console())
    before = boot_id(g)
    g.run("systemctl --no-block reboot")
    _, cmdline = wait_next_boot(g, before, 900, "b")
    console = g.console()[serial_before:]
    panics = console.count("Rebooting automatically due to panic= boot argument")
    R.check(f"update: {version}, whose root does not mount, restarts from its initramfs (panic=10) "
            "until its tries are spent, and the box is back on slot B",
            f"installed {version} into slot A" in said and "clinicbox.slot=b" in cmdline and panics >= 3,
            f"{panics} initramfs restarts; {said.splitlines()[-1:] if said else 'not installed'}; {cmdline[-120:]}")
    healthy(g, 300)
    rb = last_rollback(g)
    R.check("update: that rollback is recorded as a release that never started",
            rb.get("version") == version and "never reported a health check" in (rb.get("reason") or ""), str(rb))


def plug_stick(g, image, name):
    g.monitor(f"drive_add 0 if=none,id={name},format=raw,file={image}")
    g.monitor(f"device_add usb-storage,id={name}dev,drive={name},bus=xhci.0,removable=on")


def unplug_stick(g, name):
    g.monitor(f"device_del {name}dev")
    wait_until(lambda: g.run(f"findmnt {STICK}")[0] != 0, 60, 2)


def check_rollback_reported(g, rb):
    ok, out = point_uplink(g)
    box = json.loads(g.http("/status.json", auth=("imagetest", "ImageTest-2026!"))[1] or "{}").get("info", {}).get("box_id", "")

    def reported():
        req = urllib.request.Request(f"{NATIONAL.url}/api/dataStore/clinicbox-fleet/{box}",
                                     headers={"Authorization": f"ApiToken {NATIONAL_TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                c = json.load(r)
        except (urllib.error.URLError, ValueError, OSError):
            return None
        return c if (c.get("lastRollback") or {}).get("version") == rb.get("version") and c.get("slot") == "b" else None

    c = wait_until(reported, 240, 5) or {}
    R.check("update: the next check-in at national reports the rollback, its reason and slot B",
            ok and bool(c) and c.get("lastRollback", {}).get("reason") == rb.get("reason"),
            f"{c.get('version')} slot {c.get('slot')}: {c.get('lastRollback')}")


def check_update(image, work, disk, port, boot_timeout):
    good, bad = UPDATES["good"], UPDATES["bad"]
    gv = re.search(r"-(\d+\.\d+\.\d+)\.img$", good).group(1)
    bv = re.search(r"-(\d+\.\d+\.\d+)\.img$", bad).group(1)
    t = time.monotonic()
    good_bundle = make_bundle(good, work, "release-good")
    R.figures["update: bundle a built image (root, kernel, initrd) and sign it s"] = round(time.monotonic() - t, 1)
    size = sum(os.path.getsize(os.path.join(UPDATES["repo"], "targets", f))
               for f in os.listdir(os.path.join(UPDATES["repo"], "targets")) if f.endswith(".bundle"))
    R.figures["update: release download, MiB (full bundle)"] = round(size / 1048576)
    first = len(STARTED)
    g = Guest(work, disk, port, 5)
    g.start()
    try:
        if not check_boot_ready(g, "update boot", boot_timeout):
            return
        g = stage_release(g, gv, work, port, boot_timeout)
        if not g:
            return
        g = check_update_cut_and_installed(g, work, port, boot_timeout, gv)
        if not g:
            return
        make_bundle(bad, work, "release-bad")
        rb = check_update_rolls_back(g, work, bv)
        if rb:
            check_rollback_reported(g, rb)
        rootless = re.sub(r"\d+$", lambda m: str(int(m.group()) + 1), bv)
        make_rootless_release(work, good_bundle, rootless)
        check_refusals(g, work, rootless)
        check_initramfs_failure_rolls_back(g, work, rootless)
        g.poweroff()
    finally:
        for started in STARTED[first:]:
            started.cleanup()


# --- first setup, as a person does it on the status page -------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)
DEMO_PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../appliance/api/demo/metadata.json")


def first_setup(g, user, password):
    """Claims the new box at /setup (clinic name + first admin), checks that the recovery keys
    it shows once really open the data partition and the store, confirms them, and uploads
    the metadata package. Returns True when the admin can log in."""
    status, page = g.http("/")
    R.check("first boot: the status page asks for setup", status == 200 and 'data-figure="setup-todo"' in page,
            f"HTTP {status}")
    origin = {"Origin": f"http://127.0.0.1:{g.port}", "Content-Type": "application/x-www-form-urlencoded"}
    form = urllib.parse.urlencode({"clinic_name": "Image Test Clinic", "username": user,
                                   "password": password, "confirm": password}).encode()
    status, page = g.http("/setup/claim", "POST", raw=form, headers=origin)
    keys = dict(re.findall(r'data-figure="recovery-key-label">([^<]+)</p><p><code[^>]*data-figure="recovery-key">([^<]+)<', page))
    R.check("setup: the box is claimed with the clinic name and its first admin", status == 200, f"HTTP {status}")
    if status != 200:
        return False
    luks = next((k for label, k in keys.items() if label.startswith("Data partition")), None)
    store = next((k for label, k in keys.items() if label.startswith("Store")), None)
    RECOVERY["store"] = store
    R.check("setup: both recovery keys shown once (store; LUKS2 from systemd-cryptenroll)", bool(luks and store),
            f"{sorted(keys)}")
    if luks:
        rc, out = g.run("dev=$(/usr/lib/clinicbox/data-setup status | tr ' ' '\\n' | sed -n 's/^device=//p'); "
                        f"printf '%s' '{luks}' | cryptsetup open --test-passphrase --key-file=- \"$dev\" && echo opened")
        R.check("setup: the LUKS2 recovery key shown opens the data partition", rc == 0 and "opened" in out, out[-200:])
    if store:
        rc, out = g.run("systemctl stop clinicbox.service && "
                        f"printf '%s\\n' '{store}' | runuser -u clinicbox -- /usr/bin/clinicbox "
                        "--config /etc/clinicbox/clinicbox.toml keys list --unlock-recovery; rc=$?; "
                        "systemctl start clinicbox.service; exit $rc", timeout=180)
        R.check("setup: the store recovery key shown unlocks the store", rc == 0 and "Recovery" in out, out[-200:])
        if g.wait_http("/health", 90) is None:
            R.check("service back after the recovery key check", False)
            return False
    admin = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    status, _ = g.http("/setup/keys/done", "POST", raw=b"", headers={**origin, **admin})
    _, left = g.run("ls /data/clinicbox/keys")
    R.check("setup: keys confirmed written down are deleted from the box", status == 303 and ".pending" not in left,
            f"HTTP {status}; keys dir: {left.split()}")
    boundary = "clinicbox-image-test-boundary"
    package = open(DEMO_PACKAGE, "rb").read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"package\"; filename=\"metadata.json\"\r\n"
            f"Content-Type: application/json\r\n\r\n").encode() + package + f"\r\n--{boundary}--\r\n".encode()
    status, page = g.http("/setup/metadata", "POST", raw=body, timeout=60,
                          headers={**admin, "Origin": origin["Origin"],
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
    R.check("setup: the metadata package uploads and imports", status == 200 and "import-summary" in page,
            re.sub(r"<[^>]+>", " ", page)[-200:] if status != 200 else "")
    status, page = g.http("/setup", headers=admin)
    R.check("setup: complete; a tablet user from the package logs in",
            'data-figure="setup-complete"' in page and g.http("/api/me", auth=("android", "Android123"))[0] == 200,
            f"HTTP {status}")
    return g.http("/api/me", auth=(user, password))[0] == 200


# --- writes ---------------------------------------------------------------------------

class Api:
    """Acknowledged writes through the tablet API (dataStore values, admin user)."""

    def __init__(self, auth):
        self.auth = auth

    def write(self, g, i):
        status, body = g.http(f"/api/dataStore/{NS}/r{i:06d}", "POST", {"n": i, "pad": "x" * 200}, self.auth, timeout=10)
        return status in (200, 201)

    def read(self, g, i):
        status, body = g.http(f"/api/dataStore/{NS}/r{i:06d}", auth=self.auth, timeout=10)
        if status != 200:
            return False
        try:
            return json.loads(body).get("n") == i
        except ValueError:
            return False


def setup_writer(g):
    """The admin made at first setup writes the records."""
    user, password = "imagetest", "ImageTest-2026!"
    if not first_setup(g, user, password):
        return None
    api = Api((user, password))
    if api.write(g, 0):
        return api
    status, body = g.http(f"/api/dataStore/{NS}/r{0:06d}", "POST", {"n": 0}, api.auth)
    R.check("dataStore write with the new admin user", False, f"HTTP {status}: {body[:200]}")
    return None


def write_records(g, api, start, count):
    acked = []
    for i in range(start, start + count):
        if api.write(g, i):
            acked.append(i)
    return acked


class Writer(threading.Thread):
    """Writes records back to back until stopped; remembers what was acknowledged."""

    def __init__(self, g, api, start, limit=100000, seconds=120):
        super().__init__(daemon=True)
        self.g, self.api, self.next, self.limit, self.seconds = g, api, start, limit, seconds
        self.acked, self.stop = [], threading.Event()

    def run(self):
        t_end = time.monotonic() + self.seconds
        while not self.stop.is_set() and len(self.acked) < self.limit and time.monotonic() < t_end:
            i = self.next
            self.next += 1
            if self.api.write(self.g, i):
                self.acked.append(i)


def missing_records(g, api, ids):
    return [i for i in ids if not api.read(g, i)]


# --- main ------------------------------------------------------------------------------

def main():
    # Ctrl-C / SIGTERM: unwind so every Guest.cleanup() stops its QEMU and swtpm.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--boot-timeout", type=int, default=300)
    ap.add_argument("--update-repo", help="a TUF repository the image trusts (clinicbox-publish init)")
    ap.add_argument("--update-keys", help="its signing keys")
    ap.add_argument("--update-images", help="GOOD,BAD: newer images of the same root, the second's clinicbox broken")
    args = ap.parse_args()
    if args.update_repo and args.update_images:
        good, bad = args.update_images.split(",")
        UPDATES.update(repo=args.update_repo, keys=args.update_keys, good=good, bad=bad)
    if not args.image or not os.path.isfile(args.image):
        R.check("the image to boot exists", False, repr(args.image))
        print(f"nuc boot test: {len(R.passed)} passed, {len(R.failed)} failed")
        sys.exit(1)

    work = args.work or os.path.join(os.path.dirname(os.path.abspath(args.image)), "image-test")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    disk = os.path.join(work, "disk.img")
    log(f"copying {args.image} to {disk}")
    sh("cp", "--sparse=always", args.image, disk)
    inject_agent(disk)
    # A bigger disk than the image, as on a real SSD: first boot grows /data.
    sh("truncate", "-s", "+1G", disk)
    shutil.copy(OVMF_VARS, os.path.join(work, "vars.fd"))
    port = free_port()
    api = None
    acked_clean = []
    stick, identity = None, {}
    global NATIONAL
    standin = os.environ.get("CLINICBOX_NATIONAL_STANDIN", "")
    if standin and os.path.isfile(standin) and shutil.which("socat"):
        NATIONAL = National(standin, UPDATES.get("repo"))
        log(f"national stand-in at {NATIONAL.url} (the guest's {NATIONAL_GUEST_URL})")

    # ---------------- boot 1: first boot ----------------
    g = Guest(work, disk, port, 1)
    g.start()
    try:
        if check_boot_ready(g, "first boot", args.boot_timeout):
            check_system_info(g)
            check_storage(g, first_boot=True)
            check_root_readonly(g)
            check_units(g)
            check_boot_counting(g)
            check_watchdog_restart(g)
            api = setup_writer(g)
            if api:
                status, body = g.http("/api/system/info", auth=api.auth)
                R.check("GET /api/system/info as a logged-in user: 200 with the server's version",
                        status == 200 and '"version"' in body, f"HTTP {status}: {body[:160]}")
                acked_clean = [0] + write_records(g, api, 1, 49)
                R.check("50 records written and acknowledged before a clean poweroff", len(acked_clean) == 50, str(len(acked_clean)))
        # The journal is in RAM: copy clinicbox's log lines to the serial console
        # until the service has stopped (Before= orders this unit's stop after it).
        g.run("systemd-run --unit=imagetest-journal -p DefaultDependencies=no -p Before=clinicbox.service "
              "sh -c 'exec journalctl -f -n0 -u clinicbox.service -o cat | sed -u s/^/clinicbox-log:\\ / >/dev/ttyS0'")
        time.sleep(2)
        t = time.monotonic()
        ok = g.poweroff()
        serial = g.console()
        # serve exits 0 only when its store closed cleanly ("the store did not close cleanly" otherwise).
        closed = "clinicbox-log: store closed" in serial
        clean_exit = "clinicbox-log: clinicbox.service: Deactivated successfully" in serial
        R.check("clean poweroff: serve closes the store and exits 0 before /data is unmounted",
                ok and closed and clean_exit and serial.find("Deactivated successfully") < serial.find("Unmounted data.mount")
                and "reboot: Power down" in serial,
                f"{time.monotonic() - t:.1f} s; store closed={closed}, exit 0={clean_exit}")
    finally:
        g.cleanup()

    # ---------------- boot 2: TPM unlock, consistency, power cut ----------------
    g = Guest(work, disk, port, 2)
    g.start()
    writer = None
    try:
        if check_boot_ready(g, "second boot", args.boot_timeout):
            _, status = g.run("/usr/lib/clinicbox/data-setup status")
            R.check("second boot unlocked /data with the TPM alone", "method=tpm2" in status, status.replace("\n", " "))
            if api:
                miss = missing_records(g, api, acked_clean)
                R.check("every record acknowledged before the clean poweroff is there", not miss, f"missing {miss[:10]}")
                writer = Writer(g, api, 1000)
                writer.start()
                time.sleep(8)
                log(f"power cut after {len(writer.acked)} acknowledged writes (writes in flight)")
        if writer:
            g.kill()
            writer.stop.set()
            writer.join(30)
            R.figures["records acknowledged before the power cut"] = len(writer.acked)
        else:
            g.kill()
    finally:
        g.cleanup()

    # ---------------- boot 3: after the power cut ----------------
    g = Guest(work, disk, port, 3)
    g.start()
    try:
        if check_boot_ready(g, "boot after power cut", args.boot_timeout):
            if writer:
                miss = missing_records(g, api, acked_clean + writer.acked)
                R.check("after the power cut every acknowledged record is there",
                        not miss and len(writer.acked) > 0,
                        f"{len(acked_clean) + len(writer.acked)} checked, missing {miss[:10]}")
            _, failed = g.run("systemctl --failed --no-legend --plain")
            R.check("no failed units after the power cut", failed.strip() == "", failed.replace("\n", " | "))
            if api:
                check_uplink_push(g)
                identity = box_identity(g, api.auth)
                stick = check_backup_button(g, work, api.auth)
        g.poweroff()
    finally:
        g.cleanup()

    # ---------------- boot 4: a replacement box restored from the stick ----------------
    if stick:
        acked = acked_clean + (writer.acked if writer else [])
        check_restore_on_replacement(args.image, work, stick, api, acked, identity, args.boot_timeout)

    # ---------------- boots 5-6: the first box updates, and rolls back a broken release ----------------
    if UPDATES and NATIONAL and api:
        check_update(args.image, work, disk, port, args.boot_timeout)
    elif UPDATES:
        R.note("updates on the image not checked: no national stand-in (the update mirror) or no set-up box")

    if NATIONAL:
        NATIONAL.stop()
    print()
    for k, v in R.figures.items():
        print(f"FIGURE {k}: {v}")
    for n in R.notes:
        print(f"NOTE {n}")
    print(f"nuc boot test: {len(R.passed)} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
