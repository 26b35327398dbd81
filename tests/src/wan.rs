//! The WAN side of a box for the uplink's daemon tests: a network namespace with a `wan0`
//! whose default route comes and goes, and `clinicbox uplink` running inside it.

use crate::RunningBox;
use crate::national::National;

/// A namespace whose `wan0` (a veth pair standing for the dongle; no dummy driver here)
/// gets and loses its default route as the test says.
pub struct Wan {
    pub ns: String,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Wan {
    /// `tag` tells apart the namespaces of tests running at once in this process.
    pub fn new(tag: &str) -> Wan {
        let ns = format!("cbup{}{tag}", std::process::id() % 100_000);
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // A veth pair stands for the dongle and the carrier's side (no dummy driver here).
        ip(&[
            "-n", &ns, "link", "add", "wan0", "type", "veth", "peer", "name", "carrier0",
        ]);
        ip(&["-n", &ns, "addr", "add", "10.77.0.1/24", "dev", "carrier0"]);
        ip(&["-n", &ns, "link", "set", "carrier0", "up"]);
        ip(&["-n", &ns, "addr", "add", "10.77.0.2/24", "dev", "wan0"]);
        ip(&["-n", &ns, "link", "set", "wan0", "up"]);
        Wan { ns }
    }

    pub fn up(&self) {
        ip(&[
            "-n",
            &self.ns,
            "route",
            "replace",
            "default",
            "via",
            "10.77.0.1",
            "dev",
            "wan0",
        ]);
    }

    pub fn down(&self) {
        ip(&["-n", &self.ns, "route", "del", "default"]);
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

/// A daemon child that is killed when the test ends, even when an assertion failed first.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `clinicbox uplink` (the daemon) inside `wan`'s namespace beside box `b`, sending to
/// `national` through `wan0`, with `extra` lines for `[uplink]`; its log in the box's directory.
pub fn start_daemon(b: &RunningBox, wan: &Wan, national: &National, extra: &str) -> Daemon {
    let config = b.dir().join("uplink.toml");
    std::fs::write(
        &config,
        format!(
            "[uplink]\nnational_url = \"{}\"\ntoken_file = \"{}\"\ninterface = \"wan0\"\n{}socket = \"{}\"\n{extra}",
            national.url,
            national.token_file.display(),
            if extra.contains("interval_secs") {
                ""
            } else {
                "interval_secs = 3600\n"
            },
            b.dir().join("data").join("uplink.sock").display()
        ),
    )
    .expect("uplink daemon");
    std::process::Command::new("ip")
        .args(["netns", "exec", &wan.ns])
        .arg(crate::binary())
        .arg("--config")
        .arg(&config)
        .arg("uplink")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(b.dir().join("uplink.log")).expect("uplink daemon"))
        .spawn()
        .map(Daemon)
        .expect("uplink daemon")
}
