//! Headless Chromium driven through ChromeDriver's WebDriver HTTP API (Debian `chromium` and
//! `chromium-driver`), for checks a screenshot cannot make: what a page's layout measures at a
//! phone's and a desktop's size. The pages themselves run no script; WebDriver's own script
//! measures them from outside.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A screen to render at.
#[derive(Debug, Clone, Copy)]
pub enum Screen {
    /// A phone held upright (390 × 844 CSS pixels, touch, device pixel ratio 3).
    Phone,
    /// A laptop (1366 × 900).
    Desktop,
}

/// One browser session; the driver and the browser end when it is dropped.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start(screen: Screen) -> Browser {
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver)");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while request(&addr, "GET", "/status", b"").is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({"binary": "/usr/bin/chromium"});
        match screen {
            Screen::Phone => {
                options["mobileEmulation"] = json!({"deviceMetrics":
                    {"width": 390, "height": 844, "pixelRatio": 3.0, "touch": true}});
            }
            Screen::Desktop => args.push("--window-size=1366,900".into()),
        }
        options["args"] = json!(args);
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}});
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let answer = b.command("POST", "/session", &caps);
        b.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        b
    }

    /// Opens `url` and waits until it has loaded.
    pub fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.command("POST", &path, &json!({"url": url}));
    }

    /// Runs `script` (a function body; `return` gives the value) in the open page.
    pub fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.command("POST", &path, &json!({"script": script, "args": []}))
    }

    fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        let bytes = serde_json::to_vec(body).expect("json");
        let (status, answer) = request(&self.addr, method, path, &bytes)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }
}

/// One request to ChromeDriver, which keeps connections open: the answer is read by its
/// `Content-Length`, not to the end of the stream.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line}")))?;
    let mut length = 0;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    r.read_exact(&mut answer)?;
    Ok((status, answer))
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = request(&self.addr, "DELETE", &path, b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
