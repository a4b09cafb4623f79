//! A throwaway PostgreSQL cluster that a test starts, stops and starts again (a database
//! restart under running nodes), from the server binaries `.ci/run` names in
//! `HOOKGATE_TEST_PG_BIN` (run as `HOOKGATE_TEST_PG_USER` when root).

use super::{free_port, skipped, temp_dir};

/// A throwaway PostgreSQL cluster of a test's (or bench's) own, which it can stop and start.
pub struct PrivateCluster {
    bin: std::path::PathBuf,
    user: Option<String>,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    /// `None` locally when no PostgreSQL binaries are configured; fails under CI.
    pub fn create() -> Option<PrivateCluster> {
        let Some(bin) = std::env::var_os("HOOKGATE_TEST_PG_BIN") else {
            assert!(std::env::var_os("CI").is_none(), "HOOKGATE_TEST_PG_BIN is not set: under CI this test must run");
            skipped("set HOOKGATE_TEST_PG_BIN (and HOOKGATE_TEST_PG_USER when root), as .ci/run does");
            return None;
        };
        let user = std::env::var("HOOKGATE_TEST_PG_USER").ok().filter(|u| !u.is_empty());
        let dir = temp_dir();
        let c = PrivateCluster { bin: bin.into(), user, dir, port: free_port() };
        if let Some(u) = &c.user {
            let ok = std::process::Command::new("chown").arg(u).arg(c.dir.path()).status().unwrap().success();
            assert!(ok, "chown the cluster's directory");
        }
        c.run("initdb", &["-D", &c.data(), "-A", "trust", "-U", "hookgate"]);
        c.start();
        Some(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => std::process::Command::new(&exe),
        };
        let out = cmd.args(args).output().unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"]);
    }

    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://hookgate@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", self.user.as_deref().unwrap_or("root"), "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
