//! Reading an audit trail the way an auditor would — the segment files and
//! `edgefleet-apiserver audit verify` — and what kubectl says it sent (`-v=8` logs every
//! request, its response status and the response's `Audit-Id` header).
//!
//! A trail is `segment-NNNNNN.log` files of one JSON record per line,
//! `{"event"|"checkpoint": …, "hash": …, "prev": …, "seq": n}`; events are kube's
//! `audit.k8s.io/v1` `Event`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::hub::binary;

/// One line of a trail.
#[derive(Clone, Debug)]
pub struct Record {
    pub segment: PathBuf,
    /// From 1.
    pub line: usize,
    pub seq: u64,
    /// The whole record as written.
    pub json: Value,
}

impl Record {
    /// The audit event this record holds (`None` for a checkpoint).
    pub fn event(&self) -> Option<&Value> {
        self.json.get("event")
    }
}

/// The trail's segment files, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("segment-") && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every complete record of the trail, in order. A last line without its newline (a write in
/// progress, or torn by a crash) is left out, as `audit verify` leaves it out.
pub fn records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    for segment in segments(dir) {
        let text = std::fs::read_to_string(&segment).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        for (i, line) in complete.lines().enumerate() {
            let json: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}: {line}", segment.display(), i + 1));
            out.push(Record {
                segment: segment.clone(),
                line: i + 1,
                seq: json["seq"].as_u64().expect("every record has a seq"),
                json,
            });
        }
    }
    out
}

/// Every event of the trail, in order.
pub fn events(dir: &Path) -> Vec<Value> {
    records(dir)
        .into_iter()
        .filter_map(|r| r.json.get("event").cloned())
        .collect()
}

/// `edgefleet-apiserver audit verify --dir DIR ARGS…`: exit code and what it printed.
pub fn verify(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(binary("edgefleet-apiserver"))
        .args(["audit", "verify", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .expect("edgefleet-apiserver runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One request as kubectl `-v=8` logged it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, as an event's `requestURI`.
    pub uri: String,
    /// Response status code (0 if the response never came).
    pub status: u16,
    /// The response's `Audit-Id` header.
    pub audit_id: Option<String>,
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The requests in kubectl's `-v=8` log, in the order their lines appear.
///
/// kubectl may run requests concurrently (discovery), so the status and `Audit-Id` lines are
/// attached to the latest request line before them: right for sequential requests, and for
/// concurrent ones the *sets* of URIs, statuses and audit IDs are still right, which is what
/// callers compare.
pub fn logged_requests(log: &str) -> Vec<LoggedRequest> {
    let mut out: Vec<LoggedRequest> = Vec::new();
    for line in log.lines() {
        // klog: `I1121 09:30:24.382738   13061 round_trippers.go:470] GET https://…`
        let Some((_, message)) = line.split_once("] ") else {
            continue;
        };
        if !line.contains("round_trippers.go") {
            continue;
        }
        let message = message.trim();
        if let Some((method, url)) = message.split_once(' ') {
            if METHODS.contains(&method) && url.starts_with("https://") {
                let after_scheme = &url["https://".len()..];
                let uri = after_scheme
                    .find('/')
                    .map_or("/", |i| &after_scheme[i..])
                    .to_string();
                out.push(LoggedRequest {
                    method: method.to_string(),
                    uri,
                    ..LoggedRequest::default()
                });
                continue;
            }
        }
        let Some(last) = out.last_mut() else {
            continue;
        };
        if let Some(status) = message.strip_prefix("Response Status: ") {
            last.status = status
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        } else if let Some(id) = message.strip_prefix("Audit-Id: ") {
            last.audit_id = Some(id.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_v8_logs_parse_into_requests() {
        let log = "\
I1121 09:30:24.382209   13061 loader.go:402] Config loaded from file:  /tmp/admin.kubeconfig
I1121 09:30:24.382738   13061 round_trippers.go:470] GET https://127.0.0.1:18443/openapi/v3?timeout=32s
I1121 09:30:24.382741   13061 round_trippers.go:476] Request Headers:
I1121 09:30:24.382750   13061 round_trippers.go:480]     User-Agent: kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07
I1121 09:30:24.384510   13061 round_trippers.go:581] Response Status: 200 OK in 1 milliseconds
I1121 09:30:24.384527   13061 round_trippers.go:584] Response Headers:
I1121 09:30:24.384534   13061 round_trippers.go:587]     Audit-Id: 2223af71-c566-42f3-8e68-402eba30c656
I1121 09:30:24.402253   13061 round_trippers.go:470] POST https://127.0.0.1:18443/apis/edgefleet.io/v1alpha1/environments?fieldManager=kubectl-client-side-apply
I1121 09:30:24.401924   13061 round_trippers.go:581] Response Status: 201 Created in 1 milliseconds
I1121 09:30:24.401948   13061 round_trippers.go:587]     Audit-Id: b12650a9-e8eb-4834-ab6e-43e4d418d106
";
        assert_eq!(
            logged_requests(log),
            [
                LoggedRequest {
                    method: "GET".into(),
                    uri: "/openapi/v3?timeout=32s".into(),
                    status: 200,
                    audit_id: Some("2223af71-c566-42f3-8e68-402eba30c656".into()),
                },
                LoggedRequest {
                    method: "POST".into(),
                    uri: "/apis/edgefleet.io/v1alpha1/environments?fieldManager=kubectl-client-side-apply".into(),
                    status: 201,
                    audit_id: Some("b12650a9-e8eb-4834-ab6e-43e4d418d106".into()),
                },
            ]
        );
    }
}
