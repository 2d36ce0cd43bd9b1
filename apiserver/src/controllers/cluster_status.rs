//! `Cluster.status.addons[]` and the `AddonsReady` condition: the agent's reports compared with
//! the bundle delivered to the cluster. Pure; the cluster's status writer
//! ([`crate::agents::status`]) calls it whenever either side changes.
//!
//! | delivered release r | agent's report for r's add-on            | state                        |
//! |---------------------|------------------------------------------|------------------------------|
//! | content h, version v | same content h and version v             | the report's phase and words |
//! | content h, version v | another content or version (an older one) | Pending: "runs v1, v2 not adopted yet" |
//! | content h, version v | none                                     | Pending, saying why (delivering, why delivery fails, agent away, paused) |
//!
//! Reports for add-ons no longer delivered are left out: the agent prunes them.

use edgefleet_api::delivery::{AddonPhase, AddonReport, DesiredBundle};
use edgefleet_api::jiff::Timestamp;
use edgefleet_api::{AddonState, Time};

/// How the cluster's agent stands with this hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Connected,
    Disconnected,
    /// Never connected since this hub started (or ever).
    Unknown,
}

/// The spelling of a phase in `AddonState.state`.
pub fn phase_str(phase: AddonPhase) -> &'static str {
    match phase {
        AddonPhase::Pending => "Pending",
        AddonPhase::Applied => "Applied",
        AddonPhase::Ready => "Ready",
        AddonPhase::Failed => "Failed",
        AddonPhase::Drifted => "Drifted",
    }
}

/// One entry per delivered release, in bundle order.
pub fn addon_states(
    bundle: &DesiredBundle,
    reports: &[AddonReport],
    presence: Presence,
    paused: bool,
    delivery_error: Option<&str>,
) -> Vec<AddonState> {
    bundle
        .releases
        .iter()
        .map(|release| {
            let report = reports.iter().find(|r| r.name == release.name);
            let (state, message, since) = match report {
                Some(r) if r.content == release.content && r.version == release.version => (
                    phase_str(r.phase).to_string(),
                    r.message.clone(),
                    r.since.as_deref().and_then(|s| s.parse::<Timestamp>().ok()),
                ),
                other => {
                    let running = other
                        .map(|r| format!("runs version {} ({}); ", r.version, phase_str(r.phase)));
                    let why = if paused {
                        "the cluster is paused (spec.paused), so the hub sends it nothing new"
                            .to_string()
                    } else {
                        match (presence, delivery_error) {
                            (Presence::Connected, Some(error)) => {
                                format!("not delivered: {error}; retrying")
                            }
                            (Presence::Connected, None) => "being delivered".to_string(),
                            (Presence::Disconnected, _) => {
                                "its agent is disconnected; it gets this version when it reconnects"
                                    .to_string()
                            }
                            (Presence::Unknown, _) => {
                                "its agent has not connected to this hub yet".to_string()
                            }
                        }
                    };
                    (
                        phase_str(AddonPhase::Pending).to_string(),
                        Some(format!(
                            "{}version {} {why}",
                            running.unwrap_or_default(),
                            release.version
                        )),
                        None,
                    )
                }
            };
            AddonState {
                name: release.name.clone(),
                version: Some(release.version.clone()),
                state,
                message,
                since: since.map(Time),
            }
        })
        .collect()
}

/// The `AddonsReady` condition's status, reason and message for `states`.
pub fn addons_ready(states: &[AddonState]) -> (bool, &'static str, String) {
    let total = states.len();
    let ready = states.iter().filter(|s| s.state == "Ready").count();
    if let Some(failed) = states.iter().find(|s| s.state == "Failed") {
        let count = states.iter().filter(|s| s.state == "Failed").count();
        return (
            false,
            "AddonsFailed",
            format!(
                "{count} of {total} add-ons failed; {}: {}",
                failed.name,
                failed.message.as_deref().unwrap_or("no message")
            ),
        );
    }
    if let Some(drifted) = states.iter().find(|s| s.state == "Drifted") {
        return (
            false,
            "AddonsDrifted",
            format!(
                "{} differs from its desired state on the cluster (drift: Report); {}",
                drifted.name,
                drifted
                    .message
                    .as_deref()
                    .unwrap_or("see the agent's report")
            ),
        );
    }
    if ready == total {
        let message = if total == 0 {
            "no add-on is placed on this cluster".to_string()
        } else {
            format!("all {total} add-ons are Ready")
        };
        return (true, "AddonsReady", message);
    }
    (
        false,
        "AddonsPending",
        format!("{ready} of {total} add-ons are Ready"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::delivery::{AddonRelease, DriftMode};

    fn release(name: &str, version: &str, content: &str) -> AddonRelease {
        AddonRelease {
            name: name.into(),
            version: version.into(),
            content: content.into(),
            drift: DriftMode::Correct,
        }
    }

    fn report(name: &str, version: &str, content: &str, phase: AddonPhase) -> AddonReport {
        AddonReport {
            name: name.into(),
            version: version.into(),
            content: content.into(),
            phase,
            message: (phase == AddonPhase::Failed).then(|| "configmaps \"x\" is invalid".into()),
            since: Some("2026-01-02T03:04:05Z".into()),
            drift: vec![],
        }
    }

    #[test]
    fn a_report_counts_only_for_the_content_delivered() {
        let bundle = DesiredBundle {
            hash: "b".into(),
            releases: vec![release("a", "2", "h2"), release("b", "1", "hb")],
        };
        let reports = [
            report("a", "1", "h1", AddonPhase::Ready),
            report("b", "1", "hb", AddonPhase::Failed),
            report("gone", "1", "hg", AddonPhase::Ready),
        ];
        let states = addon_states(&bundle, &reports, Presence::Connected, false, None);
        assert_eq!(states.len(), 2, "only delivered releases");
        assert_eq!(states[0].state, "Pending");
        assert_eq!(
            states[0].message.as_deref(),
            Some("runs version 1 (Ready); version 2 being delivered")
        );
        assert_eq!(states[1].state, "Failed");
        assert_eq!(
            states[1].message.as_deref(),
            Some("configmaps \"x\" is invalid")
        );
        assert_eq!(
            states[1].since.as_ref().map(|t| t.0.as_second()),
            Some(1_767_323_045)
        );
        let (ok, reason, message) = addons_ready(&states);
        assert!(!ok);
        assert_eq!(reason, "AddonsFailed");
        assert!(message.contains("b: configmaps"), "{message}");
    }

    #[test]
    fn pending_says_why() {
        let bundle = DesiredBundle {
            hash: "b".into(),
            releases: vec![release("a", "1", "h")],
        };
        let away = addon_states(&bundle, &[], Presence::Disconnected, false, None);
        assert!(away[0].message.as_ref().unwrap().contains("disconnected"));
        let paused = addon_states(&bundle, &[], Presence::Connected, true, None);
        assert!(paused[0].message.as_ref().unwrap().contains("spec.paused"));
        assert_eq!(addons_ready(&away).1, "AddonsPending");
        let refused = addon_states(
            &bundle,
            &[],
            Presence::Connected,
            false,
            Some("the agent answered the bundle with 404 Not Found"),
        );
        assert_eq!(
            refused[0].message.as_deref(),
            Some("version 1 not delivered: the agent answered the bundle with 404 Not Found; retrying")
        );
        let ready = addon_states(
            &bundle,
            &[report("a", "1", "h", AddonPhase::Ready)],
            Presence::Connected,
            false,
            None,
        );
        assert_eq!(
            addons_ready(&ready),
            (true, "AddonsReady", "all 1 add-ons are Ready".into())
        );
        assert!(addons_ready(&[]).0, "nothing placed is nothing to wait for");
    }
}
