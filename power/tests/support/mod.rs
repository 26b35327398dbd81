//! Test harness: a real NUT server (Debian `nut-server`: `upsd` + the `dummy-ups` driver playing
//! a sequence file) on 127.0.0.1 and a free high port, a recording TCP tap in front of it, a
//! fake daemon on the control socket, and one event log that all of them (and the power-off
//! command) append to, so tests can check the order of what happened.
//!
//! Without nut-server installed the tests print `SKIPPED: ...` and pass, except in CI
//! (`CI=true`), where they fail: `.ci/run` installs the package.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clinicbox_control::{
    ControlHandler, ControlListener, DaemonStatus, HandlerError, PowerReport, PowerState,
    QuiesceOutcome, SocketOptions,
};
use clinicbox_power::config::{NutConfig, NutRole, PolicyConfig, ShutdownConfig, SourceConfig};
use clinicbox_power::nut::NutClient;
use clinicbox_power::{LoopOutcome, PowerConfig, PowerLoop, PowerSource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

pub const UPSD: &str = "/lib/nut/upsd";
pub const DUMMY_UPS: &str = "/lib/nut/dummy-ups";
pub const UPS: &str = "ups1";
/// upsd.users accounts.
pub const ADMIN: (&str, &str) = ("admin", "adminpass");
pub const OTHER_HOST: (&str, &str) = ("otherhost", "otherpass");

/// Returns false (after saying why) when the NUT binaries are missing outside CI.
pub fn nut_available() -> bool {
    let missing: Vec<&str> = [UPSD, DUMMY_UPS]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{missing:?} missing: .ci/run must install nut-server");
    }
    // Listed by `./build.sh test` with its summary (`CLINICBOX_TEST_SKIPS`).
    let why = format!("NUT tests need {missing:?} (apt-get install nut-server)");
    eprintln!("SKIPPED: {why}");
    if let Some(path) = std::env::var_os("CLINICBOX_TEST_SKIPS") {
        use std::io::Write as _;
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{why}"));
    }
    false
}

/// An append-only log of events, shared with child processes through its path.
#[derive(Clone)]
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    pub fn new(path: PathBuf) -> Self {
        std::fs::write(&path, b"").expect("create event log");
        EventLog { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn push(&self, line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .expect("open event log");
        // One write per line so concurrent appenders never interleave within a line.
        f.write_all(format!("{line}\n").as_bytes())
            .expect("append event");
    }
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .expect("read event log")
            .lines()
            .map(str::to_owned)
            .collect()
    }
    /// Index of the first line containing `needle`.
    pub fn position(&self, needle: &str) -> Option<usize> {
        self.lines().iter().position(|l| l.contains(needle))
    }
    pub fn contains(&self, needle: &str) -> bool {
        self.position(needle).is_some()
    }
}

/// upsd + dummy-ups in a temp dir.
pub struct NutServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    upsd: Option<Child>,
    driver: Option<Child>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    l.local_addr().expect("addr").port()
}

impl NutServer {
    /// Start upsd and dummy-ups playing `sequence` once (`mode = dummy-once`: the file runs to
    /// its end, `TIMER n` lines wait n seconds, the last state stays).
    pub async fn start(sequence: &str) -> NutServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).expect("state dir");
        std::fs::write(d.join("nut.conf"), "MODE=standalone\n").expect("nut.conf");
        std::fs::write(
            d.join("ups.conf"),
            format!(
                "[{UPS}]\n  driver = dummy-ups\n  port = {}\n  mode = dummy-once\n  pollinterval = 1\n  desc = \"test UPS\"\n",
                d.join("ups1.seq").display()
            ),
        )
        .expect("ups.conf");
        std::fs::write(
            d.join("upsd.conf"),
            format!("LISTEN 127.0.0.1 {port}\nMAXAGE 5\n"),
        )
        .expect("upsd.conf");
        let users = format!(
            "[{}]\n  password = {}\n  upsmon primary\n  actions = SET FSD\n  instcmds = ALL\n\
             [{}]\n  password = {}\n  upsmon primary\n\
             [watcher]\n  password = watcherpass\n  upsmon secondary\n",
            ADMIN.0, ADMIN.1, OTHER_HOST.0, OTHER_HOST.1
        );
        std::fs::write(d.join("upsd.users"), users).expect("upsd.users");
        set_mode(&d.join("upsd.users"), 0o600);
        std::fs::write(d.join("ups1.seq"), sequence).expect("sequence");
        let mut s = NutServer {
            dir,
            port,
            upsd: None,
            driver: None,
        };
        s.driver = Some(s.spawn(DUMMY_UPS, &["-a", UPS], "driver.log"));
        s.upsd = Some(s.spawn(UPSD, &[], "upsd.log"));
        s.wait_ready().await;
        s
    }

    fn spawn(&self, program: &str, args: &[&str], log: &str) -> Child {
        let d = self.dir.path();
        let mut cmd = Command::new(program);
        cmd.args(args).arg("-F");
        // Root would otherwise switch to the `nut` user, which cannot read our temp dir.
        if nix::unistd::geteuid().is_root() {
            cmd.args(["-u", "root"]);
        }
        let out = std::fs::File::create(d.join(log)).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.env("NUT_CONFPATH", d)
            .env("NUT_STATEPATH", d.join("state"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // `WAIT` until the driver has delivered its first data.
            if let Ok(mut c) =
                NutClient::connect("127.0.0.1", self.port, Duration::from_secs(1)).await
                && c.get_var(UPS, "ups.status")
                    .await
                    .is_ok_and(|s| s != "WAIT")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "upsd did not come up; upsd.log:\n{}\ndriver.log:\n{}",
                self.log("upsd.log"),
                self.log("driver.log")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// What upsd says right now (`None` if it does not answer).
    pub async fn status(&self) -> Option<String> {
        let mut c = NutClient::connect("127.0.0.1", self.port, Duration::from_secs(1))
            .await
            .ok()?;
        c.get_var(UPS, "ups.status").await.ok()
    }

    /// Wait until upsd reports a status for which `pred` holds.
    pub async fn wait_status(&self, pred: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.status().await
                && pred(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "upsd never reached the awaited status"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL upsd (the driver keeps running).
    pub fn kill_upsd(&mut self) {
        if let Some(mut c) = self.upsd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL the driver (upsd keeps running and reports the data stale).
    pub fn kill_driver(&mut self) {
        if let Some(mut c) = self.driver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client logged in as another host that may set FSD.
    pub async fn other_host(&self) -> NutClient {
        let mut c = NutClient::connect("127.0.0.1", self.port, Duration::from_secs(2))
            .await
            .expect("connect as other host");
        c.authenticate(OTHER_HOST.0, OTHER_HOST.1)
            .await
            .expect("authenticate other host");
        c
    }
}

impl Drop for NutServer {
    fn drop(&mut self) {
        for child in [self.upsd.take(), self.driver.take()].into_iter().flatten() {
            let mut child = child;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A TCP tap in front of upsd that logs every line a client sends (`nut> ...`).
pub async fn start_tap(upstream: u16, log: EventLog) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tap");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut lines = BufReader::new(cr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.starts_with("PASSWORD") {
                        log.push(&format!("nut> {line}"));
                    }
                    if sw.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
                down.abort();
            });
        }
    });
    port
}

/// How the fake daemon handles a quiesce.
#[derive(Clone)]
pub enum QuiesceBehaviour {
    /// Answer at once.
    Immediate,
    /// Wait until the watch turns true (or forever).
    HoldUntil(watch::Receiver<bool>),
}

/// A stand-in for `clinicbox serve` on the control socket.
pub struct FakeDaemon {
    pub log: EventLog,
    pub reports: Mutex<Vec<PowerReport>>,
    pub accepting: Mutex<bool>,
    pub behaviour: QuiesceBehaviour,
}

impl ControlHandler for FakeDaemon {
    async fn report_power(&self, report: PowerReport) -> Result<(), HandlerError> {
        self.reports.lock().expect("lock").push(report);
        Ok(())
    }
    async fn quiesce(
        &self,
        _deadline: Duration,
        reason: String,
    ) -> Result<QuiesceOutcome, HandlerError> {
        self.log.push(&format!("daemon: quiesce ({reason})"));
        if let QuiesceBehaviour::HoldUntil(mut rx) = self.behaviour.clone() {
            let _ = rx.wait_for(|go| *go).await;
        }
        *self.accepting.lock().expect("lock") = false;
        self.log.push("daemon: quiesced");
        Ok(QuiesceOutcome {
            elapsed_ms: 1,
            drained: true,
        })
    }
    async fn resume(&self, reason: String) -> Result<(), HandlerError> {
        *self.accepting.lock().expect("lock") = true;
        self.log.push(&format!("daemon: resume ({reason})"));
        Ok(())
    }
    async fn status(&self) -> DaemonStatus {
        DaemonStatus {
            version: "fake".into(),
            accepting_writes: *self.accepting.lock().expect("lock"),
            power: self.reports.lock().expect("lock").last().cloned(),
            reboot_hours: None,
        }
    }
}

impl FakeDaemon {
    pub fn seen_state(&self, state: PowerState) -> bool {
        self.reports
            .lock()
            .expect("lock")
            .iter()
            .any(|r| r.state == state)
    }
}

/// Serve `daemon` on `socket` for the rest of the test.
pub async fn start_daemon(socket: &Path, daemon: Arc<FakeDaemon>) {
    let listener = ControlListener::bind(socket, &SocketOptions::default())
        .await
        .expect("bind control socket");
    tokio::spawn(clinicbox_control::serve(
        listener,
        daemon,
        std::future::pending(),
    ));
}

/// A power config for tests: fast polling, short delays, the power-off command appends
/// `poweroff` to the event log.
pub fn test_config(dir: &Path, nut_port: u16, log: &EventLog) -> PowerConfig {
    PowerConfig {
        source: SourceConfig::Nut(NutConfig {
            host: "127.0.0.1".into(),
            port: nut_port,
            ups: UPS.into(),
            username: Some(ADMIN.0.into()),
            password: Some(ADMIN.1.into()),
            password_file: None,
            role: NutRole::Primary,
            io_timeout_ms: 2000,
        }),
        policy: PolicyConfig {
            poll_interval_ms: 200,
            on_battery_delay_ms: 1000,
            mains_return_delay_ms: 1000,
            charge_floor_percent: 20.0,
            runtime_floor_min_s: 60,
            runtime_safety_factor: 3.0,
            expected_shutdown_s: 10,
            dead_time_ms: 3000,
            max_on_battery_s: 0,
            filter_window: 3,
            report_interval_s: 1,
        },
        shutdown: ShutdownConfig {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo poweroff >> '{}'", log.path().display()),
            ],
            command_timeout_ms: 10_000,
            quiesce_deadline_ms: 10_000,
            sync_deadline_ms: 10_000,
            host_sync_ms: 2000,
            load_cycle_instcmds: vec!["shutdown.return".into()],
            load_cycle_command: Vec::new(),
        },
        control_socket: dir.join("control.sock"),
        state_dir: dir.join("power-state"),
    }
}

/// Every power state the loop reported, in order, without repeats.
pub fn record_states(rx: watch::Receiver<PowerReport>) -> Arc<Mutex<Vec<(PowerState, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::<(PowerState, String)>::new()));
    let out = seen.clone();
    let mut rx = rx;
    tokio::spawn(async move {
        loop {
            {
                let r = rx.borrow_and_update().clone();
                let mut s = out.lock().expect("lock");
                if s.last().map(|(st, _)| *st) != Some(r.state) {
                    s.push((r.state, r.detail.clone()));
                } else if let Some(last) = s.last_mut() {
                    last.1 = r.detail.clone();
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    seen
}

/// Run `power_loop` until it ends by itself (bounded by `limit`) or `stop` fires.
pub async fn run_bounded<S: PowerSource>(
    power_loop: PowerLoop<S>,
    stop: watch::Receiver<bool>,
    limit: Duration,
) -> LoopOutcome {
    let mut stop = stop;
    tokio::time::timeout(
        limit,
        power_loop.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }),
    )
    .await
    .expect("power loop did not finish within the test's bound")
}
