//! A real server and client over a Unix socket in a temp dir.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use clinicbox_control::{
    ClientError, ControlClient, ControlError, ControlHandler, ControlListener, DaemonStatus,
    ErrorCode, HandlerError, PowerReport, PowerState, QuiesceOutcome, SocketOptions, serve,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Default)]
struct Fake {
    reports: Mutex<Vec<PowerReport>>,
    quiesces: Mutex<Vec<(Duration, String)>>,
    accepting: Mutex<bool>,
    /// Make quiesce hang for this long.
    quiesce_delay: Duration,
}

impl ControlHandler for Fake {
    async fn report_power(&self, report: PowerReport) -> Result<(), HandlerError> {
        self.reports.lock().expect("lock").push(report);
        Ok(())
    }
    async fn quiesce(
        &self,
        deadline: Duration,
        reason: String,
    ) -> Result<QuiesceOutcome, HandlerError> {
        self.quiesces.lock().expect("lock").push((deadline, reason));
        tokio::time::sleep(self.quiesce_delay).await;
        *self.accepting.lock().expect("lock") = false;
        Ok(QuiesceOutcome {
            elapsed_ms: 3,
            drained: true,
        })
    }
    async fn resume(&self, _reason: String) -> Result<(), HandlerError> {
        *self.accepting.lock().expect("lock") = true;
        Ok(())
    }
    async fn status(&self) -> DaemonStatus {
        DaemonStatus {
            version: "test".into(),
            accepting_writes: *self.accepting.lock().expect("lock"),
            power: self.reports.lock().expect("lock").last().cloned(),
            reboot_hours: None,
        }
    }
}

fn report(state: PowerState) -> PowerReport {
    PowerReport {
        state,
        source: "test".into(),
        charge_percent: Some(55.0),
        runtime_s: None,
        on_battery_s: 12,
        detail: "On battery".into(),
        observed_at_unix_s: 1,
    }
}

async fn start(
    fake: Fake,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<Fake>,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/control.sock");
    let listener = ControlListener::bind(&path, &SocketOptions::default())
        .await
        .expect("bind");
    let fake = Arc::new(fake);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = fake.clone();
    tokio::spawn(async move {
        serve(listener, h, async {
            let _ = rx.await;
        })
        .await;
    });
    (dir, path, fake, tx)
}

async fn raw_exchange(path: &std::path::Path, line: &[u8]) -> serde_json::Value {
    let stream = UnixStream::connect(path).await.expect("connect");
    let (r, mut w) = stream.into_split();
    w.write_all(line).await.expect("write");
    let mut reader = BufReader::new(r);
    let mut out = String::new();
    reader.read_line(&mut out).await.expect("read");
    serde_json::from_str(&out).expect("answer is JSON")
}

#[tokio::test]
async fn socket_file_is_0660_and_removed_on_shutdown() {
    let (_dir, path, _fake, stop) = start(Fake::default()).await;
    let meta = std::fs::symlink_metadata(&path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // No temp file left next to it.
    let siblings: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
        .expect("readdir")
        .collect();
    assert_eq!(siblings.len(), 1);
    stop.send(()).expect("stop");
    for _ in 0..100 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("socket file not removed after shutdown");
}

#[tokio::test]
async fn report_quiesce_resume_status_round_trip() {
    let fake = Fake {
        accepting: Mutex::new(true),
        ..Fake::default()
    };
    let (_dir, path, fake, _stop) = start(fake).await;
    let mut client = ControlClient::new(&path, Duration::from_secs(5));
    client
        .report_power(report(PowerState::OnBattery))
        .await
        .expect("report");
    let outcome = client
        .quiesce(Duration::from_secs(7), "ups critical")
        .await
        .expect("quiesce");
    assert!(outcome.drained);
    let status = client.status().await.expect("status");
    assert!(!status.accepting_writes);
    assert_eq!(status.power.expect("power").state, PowerState::OnBattery);
    client.resume("mains back").await.expect("resume");
    assert!(client.status().await.expect("status").accepting_writes);
    let q = fake.quiesces.lock().expect("lock").clone();
    assert_eq!(
        q,
        vec![(Duration::from_secs(7), "ups critical".to_string())]
    );
}

#[tokio::test]
async fn hung_quiesce_is_cut_off_at_the_deadline() {
    let fake = Fake {
        quiesce_delay: Duration::from_secs(3600),
        ..Fake::default()
    };
    let (_dir, path, _fake, _stop) = start(fake).await;
    let mut client = ControlClient::new(&path, Duration::from_secs(5));
    let err = client
        .quiesce(Duration::from_millis(200), "test")
        .await
        .expect_err("must not succeed");
    match err {
        ClientError::Remote { code, .. } => assert_eq!(code, ErrorCode::DeadlineExceeded),
        other => panic!("expected deadline_exceeded, got {other:?}"),
    }
    // The connection stays usable afterwards.
    client.status().await.expect("status after deadline");
}

#[tokio::test]
async fn other_protocol_version_gets_a_clear_error() {
    let (_dir, path, _fake, _stop) = start(Fake::default()).await;
    let v = raw_exchange(
        &path,
        b"{\"v\":2,\"id\":9,\"request\":{\"op\":\"status\"}}\n",
    )
    .await;
    assert_eq!(v["id"], 9);
    assert_eq!(v["response"]["result"], "error");
    assert_eq!(v["response"]["code"], "unsupported_version");
}

#[tokio::test]
async fn garbage_and_oversize_lines_get_errors_and_the_connection_survives() {
    let (_dir, path, _fake, _stop) = start(Fake::default()).await;
    let stream = UnixStream::connect(&path).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut out = String::new();

    w.write_all(b"not json\n").await.expect("write");
    reader.read_line(&mut out).await.expect("read");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["response"]["code"], "bad_request");

    let mut big = vec![b'x'; 100 * 1024];
    big.push(b'\n');
    w.write_all(&big).await.expect("write");
    out.clear();
    reader.read_line(&mut out).await.expect("read");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["response"]["code"], "too_long");

    w.write_all(b"{\"v\":1,\"id\":3,\"request\":{\"op\":\"status\"}}\n")
        .await
        .expect("write");
    out.clear();
    reader.read_line(&mut out).await.expect("read");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["id"], 3);
    assert_eq!(v["response"]["result"], "status");
}

#[tokio::test]
async fn stale_socket_is_replaced_but_live_socket_and_regular_file_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.sock");
    // A stale socket: bound, then the listener dropped without removing the file.
    {
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind std");
        drop(l);
    }
    assert!(path.exists());
    let live = ControlListener::bind(&path, &SocketOptions::default())
        .await
        .expect("stale socket replaced");
    match ControlListener::bind(&path, &SocketOptions::default()).await {
        Err(ControlError::InUse(_)) => {}
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(live);

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").expect("write");
    match ControlListener::bind(&file, &SocketOptions::default()).await {
        Err(ControlError::NotASocket(_)) => {}
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read(&file).expect("still there"), b"keep me");
}

#[tokio::test]
async fn client_reconnects_after_the_daemon_restarts() {
    let (dir, path, _fake, stop) = start(Fake::default()).await;
    let mut client = ControlClient::new(&path, Duration::from_secs(5));
    client.status().await.expect("first status");
    stop.send(()).expect("stop");
    // Wait until the old listener is gone.
    for _ in 0..100 {
        if !path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = client.status().await.expect_err("daemon is down");
    assert!(
        matches!(
            err,
            ClientError::Connect { .. } | ClientError::Io(_) | ClientError::Closed
        ),
        "{err:?}"
    );

    let listener = ControlListener::bind(&path, &SocketOptions::default())
        .await
        .expect("rebind");
    let fake = Arc::new(Fake::default());
    tokio::spawn(serve(listener, fake, std::future::pending()));
    client.status().await.expect("status after restart");
    drop(dir);
}

#[tokio::test]
async fn socket_group_can_be_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.sock");
    // `root` exists as a group on every Debian system; the call must succeed whoever we are
    // only if we own the file and are in that group, so use our own primary group instead.
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid)
        .expect("group lookup")
        .expect("own group exists");
    let opts = SocketOptions {
        mode: 0o660,
        group: Some(group.name.clone()),
    };
    let _l = ControlListener::bind(&path, &opts)
        .await
        .expect("bind with group");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).expect("meta").gid(), gid.as_raw());

    let bad = SocketOptions {
        mode: 0o660,
        group: Some("no-such-group-clinicbox".into()),
    };
    let other = dir.path().join("other.sock");
    assert!(ControlListener::bind(&other, &bad).await.is_err());
    assert!(
        !other.exists(),
        "failed bind must not leave a socket behind"
    );
}
