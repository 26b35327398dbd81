//! A NUT network protocol client (TCP 3493): the subset upsmon uses, plus `INSTCMD`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::wire::{quote, split};

/// Longest reply line accepted (upsd's own limit is far lower).
const MAX_LINE: u64 = 8192;
/// Longest `LIST` accepted, in lines.
const MAX_LIST: usize = 4096;

/// NUT client errors.
#[derive(Debug, thiserror::Error)]
pub enum NutError {
    #[error("connection to upsd failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("upsd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upsd closed the connection")]
    Closed,
    /// `ERR <code>` from upsd, e.g. `ACCESS-DENIED`, `DATA-STALE`, `CMD-NOT-SUPPORTED`.
    #[error("upsd answered ERR {0}")]
    Server(String),
    #[error("unexpected reply from upsd: {0}")]
    Protocol(String),
}

impl NutError {
    /// The `ERR` code, if upsd sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            NutError::Server(code) => Some(code),
            _ => None,
        }
    }
}

/// One connection to upsd.
#[derive(Debug)]
pub struct NutClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl NutClient {
    /// Connect to `host:port`; every exchange afterwards is bounded by `timeout`.
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self, NutError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| NutError::Timeout(timeout))??;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(NutClient {
            reader: BufReader::new(r),
            writer: w,
            timeout,
        })
    }

    /// Send one command line and read one reply line, split into words. `ERR x` becomes
    /// [`NutError::Server`].
    pub async fn command(&mut self, words: &[&str]) -> Result<Vec<String>, NutError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.send(words).await?;
            self.reply().await
        })
        .await
        .map_err(|_| NutError::Timeout(timeout))?
    }

    async fn send(&mut self, words: &[&str]) -> Result<(), NutError> {
        let mut line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        Ok(())
    }

    async fn reply(&mut self) -> Result<Vec<String>, NutError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Err(NutError::Closed);
        }
        if !line.ends_with('\n') {
            return Err(NutError::Protocol("reply line too long".into()));
        }
        let words = split(&line).map_err(NutError::Protocol)?;
        if words.first().map(String::as_str) == Some("ERR") {
            return Err(NutError::Server(
                words.get(1).cloned().unwrap_or_else(|| "UNKNOWN".into()),
            ));
        }
        Ok(words)
    }

    fn expect_ok(words: &[String], what: &str) -> Result<(), NutError> {
        if words.first().map(String::as_str) == Some("OK") {
            Ok(())
        } else {
            Err(NutError::Protocol(format!("{what}: {}", words.join(" "))))
        }
    }

    /// `USERNAME` + `PASSWORD`.
    pub async fn authenticate(&mut self, username: &str, password: &str) -> Result<(), NutError> {
        let r = self.command(&["USERNAME", username]).await?;
        Self::expect_ok(&r, "USERNAME")?;
        let r = self.command(&["PASSWORD", password]).await?;
        Self::expect_ok(&r, "PASSWORD")
    }

    /// `LOGIN <ups>`: count this host as powered by the UPS (the primary waits for it).
    pub async fn login(&mut self, ups: &str) -> Result<(), NutError> {
        let r = self.command(&["LOGIN", ups]).await?;
        Self::expect_ok(&r, "LOGIN")
    }

    /// `PRIMARY <ups>` (falls back to the pre-2.8 `MASTER`).
    pub async fn primary(&mut self, ups: &str) -> Result<(), NutError> {
        match self.command(&["PRIMARY", ups]).await {
            Err(NutError::Server(code)) if code == "UNKNOWN-COMMAND" => {
                let r = self.command(&["MASTER", ups]).await?;
                Self::expect_ok(&r, "MASTER")
            }
            r => Self::expect_ok(&r?, "PRIMARY"),
        }
    }

    /// `GET VAR <ups> <var>`.
    pub async fn get_var(&mut self, ups: &str, var: &str) -> Result<String, NutError> {
        let r = self.command(&["GET", "VAR", ups, var]).await?;
        match r.as_slice() {
            [v, u, name, value] if v == "VAR" && u == ups && name == var => Ok(value.clone()),
            _ => Err(NutError::Protocol(format!("GET VAR: {}", r.join(" ")))),
        }
    }

    /// `SET VAR <ups> <var> <value>` (needs `actions = SET` in upsd.users).
    pub async fn set_var(&mut self, ups: &str, var: &str, value: &str) -> Result<(), NutError> {
        let r = self.command(&["SET", "VAR", ups, var, value]).await?;
        Self::expect_ok(&r, "SET VAR")
    }

    /// `GET NUMLOGINS <ups>`.
    pub async fn num_logins(&mut self, ups: &str) -> Result<u32, NutError> {
        let r = self.command(&["GET", "NUMLOGINS", ups]).await?;
        match r.as_slice() {
            [k, u, n] if k == "NUMLOGINS" && u == ups => n
                .parse()
                .map_err(|_| NutError::Protocol(format!("NUMLOGINS: {n}"))),
            _ => Err(NutError::Protocol(format!(
                "GET NUMLOGINS: {}",
                r.join(" ")
            ))),
        }
    }

    /// `FSD <ups>`: forced shutdown for every host on the UPS (needs primary).
    pub async fn fsd(&mut self, ups: &str) -> Result<(), NutError> {
        let r = self.command(&["FSD", ups]).await?;
        Self::expect_ok(&r, "FSD")
    }

    /// `INSTCMD <ups> <cmd>` (needs `instcmds` in upsd.users).
    pub async fn instcmd(&mut self, ups: &str, cmd: &str) -> Result<(), NutError> {
        let r = self.command(&["INSTCMD", ups, cmd]).await?;
        Self::expect_ok(&r, "INSTCMD")
    }

    /// `LIST UPS`: `(name, description)` pairs.
    pub async fn list_ups(&mut self) -> Result<Vec<(String, String)>, NutError> {
        let rows = self.list(&["LIST", "UPS"], "UPS").await?;
        Ok(rows
            .into_iter()
            .filter_map(|w| match w.as_slice() {
                [_, name, desc] => Some((name.clone(), desc.clone())),
                _ => None,
            })
            .collect())
    }

    /// `LIST VAR <ups>`: `(name, value)` pairs.
    pub async fn list_var(&mut self, ups: &str) -> Result<Vec<(String, String)>, NutError> {
        let rows = self.list(&["LIST", "VAR", ups], "VAR").await?;
        Ok(rows
            .into_iter()
            .filter_map(|w| match w.as_slice() {
                [_, _, name, value] => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect())
    }

    async fn list(&mut self, words: &[&str], item: &str) -> Result<Vec<Vec<String>>, NutError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.send(words).await?;
            let begin = self.reply().await?;
            if begin.first().map(String::as_str) != Some("BEGIN") {
                return Err(NutError::Protocol(format!("LIST: {}", begin.join(" "))));
            }
            let mut rows = Vec::new();
            loop {
                let w = self.reply().await?;
                match w.first().map(String::as_str) {
                    Some("END") => return Ok(rows),
                    Some(k) if k == item && rows.len() < MAX_LIST => rows.push(w),
                    Some(k) if k == item => {
                        return Err(NutError::Protocol("LIST too long".into()));
                    }
                    _ => return Err(NutError::Protocol(format!("LIST: {}", w.join(" ")))),
                }
            }
        })
        .await
        .map_err(|_| NutError::Timeout(timeout))?
    }

    /// `LOGOUT`, then close.
    pub async fn logout(mut self) {
        let _ = self.command(&["LOGOUT"]).await;
    }
}
