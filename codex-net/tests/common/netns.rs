//! Linux network namespaces made by a test, and node processes run in them: the test
//! binary runs itself in a namespace (`ip netns exec NS <test binary> <node test>`),
//! its role in the environment; a node tells the test what it did in lines that start
//! with [`MARK`] and hold `key=value` words.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What starts a node's report line on its stdout.
pub const MARK: &str = "@NODE ";

/// Runs `cmd`, its stdout on success.
///
/// # Errors
/// When it cannot be started or exits with an error (its stderr in the message).
pub fn run(cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "`{}` failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command given as one string of words.
pub fn sh(words: &str) -> anyhow::Result<()> {
    let cmd: Vec<&str> = words.split_whitespace().collect();
    run(&cmd).map(drop)
}

/// Namespaces made by the test, deleted on drop.
#[derive(Default)]
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Makes namespace `name`, its loopback up.
    pub fn add(&mut self, name: &str) -> anyhow::Result<()> {
        run(&["ip", "netns", "add", name])?;
        self.0.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.drain(..) {
            if let Err(e) = run(&["ip", "netns", "del", &name]) {
                eprintln!("cannot delete namespace {name}: {e}");
            }
        }
    }
}

/// Why network namespaces cannot be made here, if they cannot; else a probe namespace
/// (deleted when dropped) for further checks.
pub fn probe_namespaces() -> Result<Namespaces, String> {
    if let Err(e) = run(&["ip", "-V"]) {
        return Err(format!("no `ip` command: {e}"));
    }
    let probe = format!("cxnprobe{}", std::process::id());
    let mut ns = Namespaces::default();
    if let Err(e) = ns.add(&probe) {
        return Err(format!(
            "cannot make a network namespace (root needed): {e}"
        ));
    }
    Ok(ns)
}

/// A node process in a namespace: its report lines, its log (stderr) kept in a file.
/// Killed when dropped.
pub struct NodeProcess {
    pub name: String,
    pub child: Child,
    pub lines: mpsc::Receiver<HashMap<String, String>>,
    pub log: PathBuf,
}

impl NodeProcess {
    /// Runs the test `test` of this test binary in namespace `ns` with `env`, its log
    /// in `dir/<name>.log`.
    pub fn start(
        name: &str,
        ns: &str,
        test: &str,
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<NodeProcess> {
        let exe = std::env::current_exe()?;
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints `test <name> ... ` before the test's own output.
                if let Some((_, rest)) = line.split_once(MARK) {
                    let kv = rest
                        .split_whitespace()
                        .filter_map(|w| w.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    if tx.send(kv).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(NodeProcess {
            name: name.to_string(),
            child,
            lines,
            log,
        })
    }

    /// The next report line, within `timeout`.
    pub fn line(&mut self, timeout: Duration) -> anyhow::Result<HashMap<String, String>> {
        self.lines.recv_timeout(timeout).map_err(|_| {
            anyhow::anyhow!(
                "{} said nothing within {timeout:?} (exit: {:?})",
                self.name,
                self.child.try_wait().ok().flatten()
            )
        })
    }

    /// The last 60 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        lines[from..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `k` in a report line.
pub fn field<'a>(kv: &'a HashMap<String, String>, k: &str) -> anyhow::Result<&'a str> {
    kv.get(k)
        .map(String::as_str)
        .ok_or_else(|| anyhow::anyhow!("no {k} in {kv:?}"))
}

/// The value of `k` in a report line, parsed.
pub fn num<T: std::str::FromStr>(kv: &HashMap<String, String>, k: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(field(kv, k)?.parse()?)
}
