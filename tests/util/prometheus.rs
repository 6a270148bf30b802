//! What monitoring reads: the Prometheus text format (parsed strictly enough to catch
//! a malformed exposition), prometheus-apache-exporter run against the server, and the
//! status page's `?json` snapshot (parsed with serde_json).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::http::{free_port, get, get_http10};

/// One sample line of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every sample line (comments and blank lines skipped); label values are
/// unescaped, so two spellings of the same series compare equal.
pub fn parse_samples(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(bad("bad metric name"));
        }
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let close = loop {
                while chars.next_if(|(_, c)| *c == ' ' || *c == ',').is_some() {}
                let Some((i, c)) = chars.next() else {
                    return Err(bad("unterminated labels"));
                };
                if c == '}' {
                    break i;
                }
                let mut key = String::from(c);
                loop {
                    match chars.next() {
                        Some((_, '=')) => break,
                        Some((_, c)) => key.push(c),
                        None => return Err(bad("label without =")),
                    }
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("unquoted label value"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(bad("unterminated escape")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                }
                labels.push((key, value));
            };
            rest = &after[close + 1..];
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| bad("bad value"))?,
        };
        if fields.nth(1).is_some() {
            return Err(bad("trailing fields"));
        }
        labels.sort();
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// `# TYPE` of every family.
pub fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// The series that appear more than once.
pub fn duplicates(samples: &[Sample]) -> Vec<String> {
    let mut seen = HashSet::new();
    samples
        .iter()
        .map(|s| format!("{}{:?}", s.name, s.labels))
        .filter(|k| !seen.insert(k.clone()))
        .collect()
}

/// The sum of `name` over the series whose `environment` label is `env`.
pub fn env_sum(samples: &[Sample], name: &str, env: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.label("environment") == Some(env))
        .map(|s| s.value)
        .sum()
}

/// The exporter, killed by pid when dropped.
pub struct Exporter {
    child: Child,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Exporter {
    pub fn start(bin: &Path, scrape_uri: &str) -> Exporter {
        Self::start_as(bin, scrape_uri, None)
    }

    /// The exporter running as `uid` (and the same gid), or as the test when `None`.
    pub fn start_as(bin: &Path, scrape_uri: &str, uid: Option<u32>) -> Exporter {
        use std::os::unix::process::CommandExt;
        let log = tempfile::NamedTempFile::new().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(bin);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let child = cmd
            .arg(format!("--scrape_uri={scrape_uri}"))
            .arg(format!("--telemetry.address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Exporter { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// One scrape of the exporter: its samples (it scrapes bulkhead each time).
    pub fn scrape(&self) -> Option<Vec<Sample>> {
        let (status, body) = get_http10(self.addr, "/metrics")?;
        if status != 200 {
            return None;
        }
        parse_samples(&body).ok()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub fn value_of(samples: &[Sample], name: &str) -> Option<f64> {
    samples.iter().find(|s| s.name == name).map(|s| s.value)
}

/// `GET /server-status?json`, parsed.
pub fn scoreboard_json(addr: SocketAddr) -> Value {
    let r = get(addr, "status.test", "/server-status?json");
    assert_eq!(r.status, 200, "server-status: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("server-status JSON: {e}\n{}", r.text()))
}

/// The `environments[]` row named `env` of a status snapshot.
pub fn env_row<'a>(snap: &'a Value, env: &str) -> &'a Value {
    snap["environments"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"].as_str() == Some(env)))
        .unwrap_or_else(|| panic!("no environment {env} in the status page"))
}

/// One numeric field of environment `env`'s status row, read now.
pub fn env_stat(addr: SocketAddr, env: &str, field: &str) -> u64 {
    let snap = scoreboard_json(addr);
    env_row(&snap, env)[field]
        .as_u64()
        .unwrap_or_else(|| panic!("environment {env}: no numeric {field}"))
}
