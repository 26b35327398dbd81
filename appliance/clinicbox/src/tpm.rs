//! `clinicbox tpm reset-lockout`: clears the TPM's dictionary-attack counter before the data
//! partition is unlocked (`image/scripts/data-setup`).
//!
//! A TPM counts every power cut that follows a use of a DA-protected object as a failed try
//! (TPM 2.0 Part 1, §19.8.6: otherwise cutting the power would undo a real failure), and once
//! the count reaches its limit (3 on swtpm; a hardware TPM sets its own) it refuses those
//! objects for hours. bookworm's `systemd-cryptenroll` seals the data key without `noDA`, so a
//! clinic whose UPS runs flat a few times would find its box locked out of its own data. The
//! key is bound to PCRs and has no password: the counter protects nothing there. Resetting
//! it takes the lockout hierarchy's authorization, empty on a TPM nobody took ownership of.
//!
//! One fixed command (TPM2_DictionaryAttackLockReset with an empty password session) is sent
//! by hand: the TPM crates bind the C TSS stack, a build dependency on every board for
//! 27 bytes only a NUC ever sends.

use std::io::{Read, Write};
use std::path::Path;

/// The kernel's TPM resource manager, which sequences access with systemd's own.
pub const DEVICE: &str = "/dev/tpmrm0";

const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_DICTIONARY_ATTACK_LOCK_RESET: u32 = 0x0000_0139;
const TPM_RH_LOCKOUT: u32 = 0x4000_000A;
/// The password session: authorization by the (here empty) authValue itself.
const TPM_RS_PW: u32 = 0x4000_0009;
/// A response header: tag, size, response code.
const RESPONSE_HEADER: usize = 10;
/// Responses to this command are a header and a one-session authorization area.
const MAX_RESPONSE: usize = 64;
/// "Busy, send it again" (TPM 2.0 Part 2, TPM_RC_RETRY), and how often and when we do.
const TPM_RC_RETRY: u32 = 0x0922;
const RETRIES: u32 = 10;
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Why the TPM did not reset its counter.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("the TPM cannot be reached at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TPM's answer is cut short ({0} bytes)")]
    Short(usize),
    #[error("the TPM refused: {}", describe(*.0))]
    Refused(u32),
}

/// TPM2_DictionaryAttackLockReset(TPM_RH_LOCKOUT), authorized by an empty password.
pub fn lock_reset_command() -> Vec<u8> {
    password_command(
        TPM_CC_DICTIONARY_ATTACK_LOCK_RESET,
        &[TPM_RH_LOCKOUT],
        b"",
        &[],
    )
}

/// A command `cc` on `handles` authorized by a password session (`password`: the object's
/// authValue), with `params` after the authorization area (TPM 2.0 Part 1, §18.7).
pub fn password_command(cc: u32, handles: &[u32], password: &[u8], params: &[u8]) -> Vec<u8> {
    let mut auth = TPM_RS_PW.to_be_bytes().to_vec();
    auth.extend_from_slice(&tpm2b(b"")); // nonceCaller
    auth.push(0); // sessionAttributes
    auth.extend_from_slice(&tpm2b(password)); // hmac: the password itself
    let mut body = cc.to_be_bytes().to_vec();
    for h in handles {
        body.extend_from_slice(&h.to_be_bytes());
    }
    body.extend_from_slice(&(auth.len() as u32).to_be_bytes());
    body.extend_from_slice(&auth);
    body.extend_from_slice(params);
    let mut cmd = TPM_ST_SESSIONS.to_be_bytes().to_vec();
    cmd.extend_from_slice(&((2 + 4 + body.len()) as u32).to_be_bytes());
    cmd.extend_from_slice(&body);
    cmd
}

/// A TPM2B: the bytes after their 16-bit length.
pub fn tpm2b(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

/// Sends the reset over `tpm` (one command, one response, as `/dev/tpmrm0` and swtpm's raw
/// socket take them), again while the TPM asks for a retry.
pub fn reset_lockout(tpm: &mut (impl Read + Write), path: &str) -> Result<(), TpmError> {
    let mut tries = 0;
    loop {
        match send(tpm, path) {
            Err(TpmError::Refused(TPM_RC_RETRY)) if tries < RETRIES => {
                tries += 1;
                std::thread::sleep(RETRY_AFTER);
            }
            other => return other,
        }
    }
}

fn send(tpm: &mut (impl Read + Write), path: &str) -> Result<(), TpmError> {
    let io = |source| TpmError::Io {
        path: path.to_owned(),
        source,
    };
    tpm.write_all(&lock_reset_command()).map_err(io)?;
    let mut answer = [0u8; MAX_RESPONSE];
    let n = tpm.read(&mut answer).map_err(io)?;
    response_code(&answer[..n])
}

/// The response code of a TPM answer: success, or why not.
fn response_code(answer: &[u8]) -> Result<(), TpmError> {
    let Some(rc) = answer.get(6..RESPONSE_HEADER) else {
        return Err(TpmError::Short(answer.len()));
    };
    match u32::from_be_bytes([rc[0], rc[1], rc[2], rc[3]]) {
        0 => Ok(()),
        rc => Err(TpmError::Refused(rc)),
    }
}

/// The codes a reset meets, named; others as TPM 2.0 Part 2 numbers them.
fn describe(rc: u32) -> String {
    let what = match rc {
        0x0921 => "the lockout hierarchy itself is locked after a wrong authorization",
        0x098E | 0x09A2 => "the lockout hierarchy has a password (the TPM is owned elsewhere)",
        TPM_RC_RETRY => "the TPM stayed busy",
        0x0100 => "the TPM was not started",
        _ => return format!("response code {rc:#06x}"),
    };
    format!("{what} (response code {rc:#06x})")
}

/// `clinicbox tpm reset-lockout`: resets the counter of the TPM at `device`.
pub fn run_reset_lockout(device: &Path) -> Result<(), TpmError> {
    let path = device.display().to_string();
    let mut tpm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|source| TpmError::Io {
            path: path.clone(),
            source,
        })?;
    reset_lockout(&mut tpm, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_27_bytes_part_3_describes() {
        let cmd = lock_reset_command();
        assert_eq!(cmd.len(), 27);
        assert_eq!(
            hex::encode(&cmd),
            concat!(
                "8002",     // TPM_ST_SESSIONS
                "0000001b", // 27 bytes
                "00000139", // TPM_CC_DictionaryAttackLockReset
                "4000000a", // TPM_RH_LOCKOUT
                "00000009", // authorization area
                "40000009", // TPM_RS_PW
                "0000",     // nonce
                "00",       // attributes
                "0000",     // empty password
            )
        );
    }

    #[test]
    fn answers_are_read_by_their_response_code() {
        let ok = hex::decode("80020000001300000000000000000000010000").expect("hex");
        assert!(response_code(&ok).is_ok());
        let locked = hex::decode("80010000000a00000921").expect("hex");
        let err = response_code(&locked).expect_err("refused");
        assert!(err.to_string().contains("0x0921"), "{err}");
        assert!(matches!(response_code(&ok[..5]), Err(TpmError::Short(5))));
    }
}
