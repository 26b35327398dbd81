//! `clinicbox::tpm` against a real TPM 2.0: swtpm, as the image test's QEMU uses it, over its
//! raw command socket. The TPM is driven into dictionary-attack lockout by wrong passwords
//! (the same counter power cuts raise), and the reset must bring it back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clinicbox::tpm::tpm2b;

const TPM_RH_OWNER: u32 = 0x4000_0001;
const TPM_CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
const TPM_RC_LOCKOUT: u32 = 0x0921;
const TPM_RC_RETRY: u32 = 0x0922;
/// An NV index of the owner's range, with a password of its own.
const NV_INDEX: u32 = 0x0150_0016;
/// TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD, and not TPMA_NV_NO_DA: dictionary-attack protected,
/// as bookworm's sealed data key is.
const NV_ATTRIBUTES: u32 = (1 << 2) | (1 << 18);
/// More than any TPM's limit: the loop that provokes the lockout is bounded.
const MAX_WRONG_TRIES: usize = 64;

struct Swtpm {
    child: Child,
    _state: tempfile::TempDir,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swtpm() -> Swtpm {
    let state = tempfile::tempdir().expect("tempdir");
    let (port, ctrl) = (clinicbox_tests::free_port(), clinicbox_tests::free_port());
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.path().display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
        .args(["--flags", "not-need-init,startup-clear"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("swtpm");
    Swtpm {
        child,
        _state: state,
        port,
    }
}

fn connect(tpm: &Swtpm) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", tpm.port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("swtpm never listened: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One command authorized by a password session; the response code (a TPM that asks for a
/// retry gets one, a few times).
fn command(tpm: &mut TcpStream, cc: u32, handles: &[u32], password: &[u8], params: &[u8]) -> u32 {
    let mut rc = 0;
    for _ in 0..10 {
        rc = command_once(tpm, cc, handles, password, params);
        if rc != TPM_RC_RETRY {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    rc
}

fn command_once(
    tpm: &mut TcpStream,
    cc: u32,
    handles: &[u32],
    password: &[u8],
    params: &[u8],
) -> u32 {
    let cmd = clinicbox::tpm::password_command(cc, handles, password, params);
    tpm.write_all(&cmd).expect("send");
    let mut answer = [0u8; 256];
    let n = tpm.read(&mut answer).expect("answer");
    assert!(n >= 10, "short answer");
    u32::from_be_bytes([answer[6], answer[7], answer[8], answer[9]])
}

/// Defines the NV index with `password` (the owner's authorization is empty).
fn define_index(tpm: &mut TcpStream, password: &[u8]) -> u32 {
    let mut public = NV_INDEX.to_be_bytes().to_vec();
    public.extend_from_slice(&0x000Bu16.to_be_bytes()); // SHA-256 names
    public.extend_from_slice(&NV_ATTRIBUTES.to_be_bytes());
    public.extend_from_slice(&tpm2b(b"")); // no policy
    public.extend_from_slice(&8u16.to_be_bytes()); // 8 bytes of data
    let mut params = tpm2b(password);
    params.extend_from_slice(&tpm2b(&public));
    command(tpm, TPM_CC_NV_DEFINE_SPACE, &[TPM_RH_OWNER], b"", &params)
}

/// Writes to the NV index, authorized by `password`.
fn write_index(tpm: &mut TcpStream, password: &[u8]) -> u32 {
    let mut params = tpm2b(b"clinic01");
    params.extend_from_slice(&0u16.to_be_bytes()); // offset
    command(
        tpm,
        TPM_CC_NV_WRITE,
        &[NV_INDEX, NV_INDEX],
        password,
        &params,
    )
}

#[test]
fn a_tpm_locked_out_by_failed_tries_is_reset_and_serves_again() {
    if !clinicbox_tests::prerequisites("the TPM lockout reset test", &["swtpm"], false) {
        return;
    }
    let tpm = swtpm();
    let mut conn = connect(&tpm);
    assert_eq!(define_index(&mut conn, b"right"), 0, "define the NV index");
    assert_eq!(
        write_index(&mut conn, b"right"),
        0,
        "the right password writes"
    );
    let locked = (0..MAX_WRONG_TRIES)
        .map(|_| write_index(&mut conn, b"wrong"))
        .any(|rc| rc == TPM_RC_LOCKOUT);
    assert!(locked, "no lockout after {MAX_WRONG_TRIES} wrong passwords");
    assert_eq!(
        write_index(&mut conn, b"right"),
        TPM_RC_LOCKOUT,
        "locked out: even the right password is refused"
    );

    clinicbox::tpm::reset_lockout(&mut conn, "swtpm").expect("reset");

    assert_eq!(
        write_index(&mut conn, b"right"),
        0,
        "after the reset the right password works again"
    );
}

#[test]
fn a_device_that_is_not_there_is_named_in_the_error() {
    let err = clinicbox::tpm::run_reset_lockout(std::path::Path::new("/nonexistent/tpmrm0"))
        .expect_err("no device");
    assert!(err.to_string().contains("/nonexistent/tpmrm0"), "{err}");
}
