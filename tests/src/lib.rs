//! A harness that runs the real `clinicbox` binary as a box: it starts the process with a
//! test-owned data directory and `NOTIFY_SOCKET`, waits for systemd-style READY instead of
//! sleeping, reads the URL the daemon prints, and on stop checks what every test must respect:
//! exit 0 on SIGTERM and no panic in the log.

pub mod browser;
pub mod clinic;
pub mod link;
pub mod national;
pub mod wan;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Whether `test` can run: every tool in `tools` on the PATH (and root when `root`). When not,
/// it is skipped: said on the output and added to the list `./build.sh test` prints with its
/// summary ([`skipped`]). In CI (`CI=true`) a missing tool fails the test instead: CI installs
/// them (`.ci/run`).
pub fn prerequisites(test: &str, tools: &[&str], root: bool) -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let mut missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if root && !nix::unistd::Uid::effective().is_root() {
        missing.insert(0, "root");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test} needs {}", missing.join(", "));
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why} (CI must install them: .ci/run)"
    );
    skipped(&why);
    false
}

/// Says a test was skipped and why, on its output and in the file `./build.sh test` names in
/// `CLINICBOX_TEST_SKIPS` (its summary lists them: a skip is not a pass).
pub fn skipped(why: &str) {
    println!("SKIPPED: {why}");
    if let Some(path) = std::env::var_os("CLINICBOX_TEST_SKIPS") {
        let line = format!("{why}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// Names the `clinicbox` binary for this process (a benchmark that is not a test executable).
pub fn set_binary(path: PathBuf) {
    let _ = BINARY.set(path);
}

/// The `clinicbox` binary of this workspace ([`set_binary`] or `CLINICBOX_BIN` override).
pub fn binary() -> PathBuf {
    if let Some(p) = BINARY.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("CLINICBOX_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("clinicbox");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p clinicbox` (./build.sh test does)",
        bin.display()
    );
    bin
}

/// Runs `clinicbox` with `args` to completion (admin commands), feeding `stdin`.
pub fn run_admin(args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn clinicbox");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `clinicbox keys init --key-file KEY` for a new store in `data` (as the image's first boot
/// does), with `extra` arguments (e.g. `--no-recovery`). Panics if it fails; returns what it
/// printed (the recovery key, unless `--no-recovery`).
pub fn init_store(data: &Path, key_file: &Path, extra: &[&str]) -> String {
    let (data, key) = (data.display().to_string(), key_file.display().to_string());
    let mut args = vec!["--data-dir", &data, "keys", "init", "--key-file", &key];
    args.extend_from_slice(extra);
    let (st, out, err) = run_admin(&args, "");
    assert!(st.success(), "keys init: {out}{err}");
    out
}

/// How to start a box.
pub struct BoxBuilder {
    args: Vec<String>,
    config: Option<String>,
    watchdog_usec: Option<u64>,
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
    netns: Option<String>,
    listen: String,
}

impl Default for BoxBuilder {
    fn default() -> Self {
        BoxBuilder::new()
    }
}

impl BoxBuilder {
    pub fn new() -> BoxBuilder {
        BoxBuilder {
            args: Vec::new(),
            config: None,
            watchdog_usec: None,
            dir: tempfile::tempdir().expect("tempdir"),
            envs: Vec::new(),
            netns: None,
            listen: "127.0.0.1:0".into(),
        }
    }

    /// The HTTP listen address passed as `--listen` (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: impl Into<String>) -> BoxBuilder {
        self.listen = addr.into();
        self
    }

    /// Runs the box inside network namespace `ns` (`ip netns exec`, which execs: the pid stays
    /// the daemon's). The harness's own HTTP helpers then cannot reach it from the host.
    pub fn netns(mut self, ns: impl Into<String>) -> BoxBuilder {
        self.netns = Some(ns.into());
        self
    }

    /// A demo box (store created with a key file, demo data) in the test's own directory.
    pub fn demo() -> BoxBuilder {
        let mut b = BoxBuilder::new();
        let data = b.dir.path().join("data");
        b.args = vec![
            "--demo".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        b
    }

    /// A demo box serving the data directory `data` (one a test kept, restored or made).
    pub fn demo_at(data: impl Into<String>) -> BoxBuilder {
        BoxBuilder::new().arg("--demo").arg("--data-dir").arg(data)
    }

    /// The test-owned directory (the demo's data lives in `data/` below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(mut self, a: impl Into<String>) -> BoxBuilder {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> BoxBuilder {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// A configuration file's contents; `{dir}` is replaced by the test directory.
    /// Unless the test sets `[power] control_socket`, the socket goes in the test directory, so
    /// boxes of parallel tests never share `/run/clinicbox`.
    pub fn config(mut self, toml: &str) -> BoxBuilder {
        let mut toml = toml.replace("{dir}", &self.dir.path().display().to_string());
        if !toml.contains("[power]") {
            toml.push_str(&format!(
                "\n[power]\ncontrol_socket = \"{}\"\n",
                self.dir.path().join("control.sock").display()
            ));
        }
        self.config = Some(toml);
        self
    }

    /// Asks the daemon to pet a watchdog of this period.
    pub fn watchdog(mut self, usec: u64) -> BoxBuilder {
        self.watchdog_usec = Some(usec);
        self
    }

    /// Starts the box and waits until it reported READY (at most 60 s).
    /// Starts the box and waits for READY and its HTTP URL.
    pub fn start(self) -> RunningBox {
        let mut b = self.spawn();
        b.wait_for_notification("READY=1", Duration::from_secs(60));
        b.url = b
            .stdout_until(
                |l| l.starts_with("ClinicBox: serving http://"),
                Duration::from_secs(5),
            )
            .trim_start_matches("ClinicBox: serving ")
            .trim_end_matches('/')
            .to_owned();
        b
    }

    /// Starts the box and returns at once (no READY yet, no URL).
    pub fn spawn(self) -> RunningBox {
        let notify_path = self.dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let log_path = self.dir.path().join("clinicbox.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        if let Some(cfg) = &self.config {
            let p = self.dir.path().join("clinicbox.toml");
            std::fs::write(&p, cfg).expect("write config");
            cmd.arg("--config").arg(p);
        }
        cmd.arg("serve")
            .args(&self.args)
            .args(["--listen", self.listen.as_str()])
            .current_dir(self.dir.path())
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(u) = self.watchdog_usec {
            cmd.env("WATCHDOG_USEC", u.to_string());
        }
        let mut child = cmd.spawn().expect("spawn clinicbox serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RunningBox {
            child: Some(child),
            dir: self.dir,
            notify,
            notifications: Vec::new(),
            stdout_lines: lines,
            stdout: Vec::new(),
            url: String::new(),
            log_path,
        }
    }
}

/// A running box.
pub struct RunningBox {
    child: Option<Child>,
    dir: tempfile::TempDir,
    notify: UnixDatagram,
    notifications: Vec<String>,
    stdout_lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    url: String,
    log_path: PathBuf,
}

/// A plain HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl RunningBox {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Every sd_notify message received so far, one state per entry (`READY=1`, …).
    pub fn notifications(&mut self) -> &[String] {
        self.drain_notifications(Duration::from_millis(0));
        &self.notifications
    }

    fn drain_notifications(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        loop {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.notifications.extend(text.lines().map(str::to_owned));
                }
                Err(_) if Instant::now() >= deadline => return,
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Waits for an sd_notify state; panics with the log if it does not come.
    pub fn wait_for_notification(&mut self, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.notifications.iter().any(|n| n == state) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "clinicbox exited ({status}) before {state}; log:\n{}",
                    self.log()
                );
            }
            self.drain_notifications(Duration::from_millis(200));
        }
        panic!("no {state} within {timeout:?}; log:\n{}", self.log());
    }

    /// Waits for a stdout line matching `pred` and returns it.
    pub fn stdout_until(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        if let Some(l) = self.stdout.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout_lines.recv_timeout(left) {
                Ok(l) => {
                    self.stdout.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no matching stdout line; stdout: {:?}\nlog:\n{}",
            self.stdout,
            self.log()
        );
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// One HTTP/1.1 request on a fresh connection (no client library: the wire is what we test).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http_request(
            self.url.trim_start_matches("http://"),
            method,
            path,
            headers,
            body,
        )
    }

    /// Sends SIGTERM and waits for exit; asserts exit 0 and no panic in the log.
    pub fn stop(self) -> String {
        self.stop_within(Duration::from_secs(60))
    }

    /// As [`Self::stop`], and the box must have exited within `limit` of the signal (a unit's
    /// `TimeoutStopSec`: past it systemd kills the process).
    pub fn stop_within(mut self, limit: Duration) -> String {
        self.terminate(limit)
    }

    /// As [`Self::stop`], keeping the box's directory (its data) for a next start.
    pub fn stop_keeping(mut self) -> (String, tempfile::TempDir) {
        let log = self.terminate(Duration::from_secs(60));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (log, dir)
    }

    fn terminate(&mut self, limit: Duration) -> String {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = wait_with_timeout(&mut child, limit);
        let log = self.log();
        assert!(
            status.success(),
            "clinicbox exited with {status} on SIGTERM; log:\n{log}"
        );
        assert!(!log.contains("panicked"), "panic in the log:\n{log}");
        self.drain_notifications(Duration::from_millis(50));
        log
    }

    /// Waits for the box to exit by itself (a restart it asked for), at most `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "clinicbox did not exit by itself within {limit:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the box with SIGKILL (a power cut, as far as the process can tell).
    pub fn kill(mut self) -> tempfile::TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for RunningBox {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("clinicbox did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free now, for a server the test starts (it may be taken again before the
/// server binds it; these servers fail loudly if so).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A minimal HTTP/1.1 client over one TCP connection (`Connection: close`).
pub fn http_request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_http_request(host_port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {host_port}: {e}"))
}

/// [`http_request`] that reports a failure instead of panicking: a box killed mid-request
/// (crash tests) answers nothing, or half an answer.
pub fn try_http_request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    exchange(
        TcpStream::connect(host_port)?,
        host_port,
        method,
        path,
        headers,
        body,
    )
}

fn request_head(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: usize,
) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\nContent-Length: {len}\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// [`http_request`] from the local address `src` (any of 127.0.0.0/8): another device on the
/// LAN, as far as the box can tell.
pub fn http_request_from(
    src: std::net::Ipv4Addr,
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let dst: std::net::SocketAddrV4 = host_port.parse().expect("an IPv4 host:port");
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
    )
    .expect("bind the source address");
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst)).expect("connect");
    exchange(TcpStream::from(fd), host_port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {host_port} from {src}: {e}"))
}

/// One request and its whole answer on `s`; an answer cut short is an error.
fn exchange(
    mut s: TcpStream,
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(request_head(host_port, method, path, headers, body.len()).as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::other("no complete answer"));
    }
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
    out
}

/// Runs `f` on a thread inside network namespace `ns` (setns affects only that thread).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    })
}
