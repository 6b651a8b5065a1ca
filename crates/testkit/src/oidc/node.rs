//! A test server written for Node (`tests/oidc/*.mjs`), run as a child process that dies with its handle.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

/// How long a server may take to print its ready line (a loaded 2-core machine building in parallel).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a server's stderr is kept for error messages and [`NodeServer::logs`].
const LOG_LIMIT: usize = 64 * 1024;

/// The node package with the test servers. Found from this crate's manifest directory at compile
/// time, so it holds whichever crate's tests use the fixture.
pub(super) fn package_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/testkit → the repository root.
    let root = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    root.join("tests/oidc")
}

/// Fails with what to run when the package's dependencies were never installed.
pub(super) fn require_installed(module: &str) -> anyhow::Result<()> {
    let dir = package_dir();
    if !dir.join("node_modules").join(module).is_dir() {
        bail!(
            "{} has no node_modules/{module}: run `npm ci --prefix tests/oidc` at the repository root \
             (`make test` does)",
            dir.display()
        );
    }
    Ok(())
}

pub(super) struct NodeServer {
    _child: Child,
    logs: Arc<Mutex<String>>,
}

impl NodeServer {
    /// Runs `node <script>` from the package with `PORT=0` and `env`, and waits for the one JSON
    /// line it prints on stdout once it listens. Needs a Tokio runtime.
    pub(super) async fn start(
        script: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<(Self, serde_json::Value)> {
        let dir = package_dir();
        let mut command = Command::new("node");
        command
            .arg(script)
            .current_dir(&dir)
            .env("PORT", "0")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "`node` is not on the PATH: install Node.js 20 or later \
                 (`scripts/install-packages.sh nodejs npm`, which `make test` runs)"
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("starting node {script} in {}", dir.display()));
            }
        };

        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("the child's stderr")?;
        tokio::spawn(keep_logs(stderr, logs.clone()));
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();

        let ready = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()).await;
        let server = Self {
            _child: child,
            logs,
        };
        let line = match ready {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                // stderr may still be arriving: the process just exited.
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!("node {script} exited before listening:\n{}", server.logs());
            }
            Ok(Err(e)) => return Err(e).context(format!("reading node {script}'s stdout")),
            Err(_) => bail!(
                "node {script} printed nothing within {STARTUP_TIMEOUT:?}:\n{}",
                server.logs()
            ),
        };
        let ready = serde_json::from_str(&line)
            .with_context(|| format!("node {script}'s ready line is not JSON: {line}"))?;
        // Nothing else is expected on stdout, but a full pipe would block the server: drain it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((server, ready))
    }

    /// What the server wrote on stderr so far (warnings, server errors), its last 64 KiB.
    pub(super) fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn keep_logs(mut stderr: tokio::process::ChildStderr, logs: Arc<Mutex<String>>) {
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let Ok(mut logs) = logs.lock() else { break };
        logs.push_str(&String::from_utf8_lossy(&buffer[..n]));
        if logs.len() > LOG_LIMIT {
            let mut cut = logs.len() - LOG_LIMIT;
            while !logs.is_char_boundary(cut) {
                cut += 1;
            }
            logs.drain(..cut);
        }
    }
}
