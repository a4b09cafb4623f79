//! Fan-out: which endpoints receive an event.
//!
//! Owns: the subscription rule, including Attendee's resource scoping.
//! Must not touch: storage or the network. It is a pure function of the endpoints and the event.

use crate::config::Endpoint;
use crate::json::Object;

/// The endpoints that receive an event with `trigger` and top-level fields `event`.
///
/// An endpoint with a `match` is resource-scoped (e.g. bot-level): it applies when every matched
/// field equals the event's. Attendee's rule: if any scoped endpoint applies to the event's
/// resource, whatever its triggers, the unscoped (project-level) endpoints are skipped for that
/// event. Then the trigger filter picks the receivers.
pub fn select<'a>(endpoints: &'a [Endpoint], trigger: &str, event: &Object) -> Vec<&'a Endpoint> {
    let applies = |e: &Endpoint| e.matches.iter().all(|(k, v)| event.get(k) == Some(v));
    let scoped: Vec<&Endpoint> = endpoints.iter().filter(|e| !e.matches.is_empty() && applies(e)).collect();
    let candidates =
        if scoped.is_empty() { endpoints.iter().filter(|e| e.matches.is_empty()).collect() } else { scoped };
    candidates.into_iter().filter(|e| e.triggers.contains(trigger)).collect()
}

/// Svix's channel rule: an endpoint without channels takes every message; one with channels
/// only messages sent to at least one of them (so never an event without channels).
pub fn in_channels(endpoint: &Endpoint, channels: &[String]) -> bool {
    endpoint.channels.is_empty() || endpoint.channels.iter().any(|c| channels.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Triggers;
    use crate::json::{self, Value};

    fn ep(id: &str, triggers: &[&str], bot: Option<&str>) -> Endpoint {
        Endpoint {
            id: id.into(),
            tenant: "default".into(),
            url: "https://example.com/".parse().unwrap(),
            triggers: if triggers == ["*"] {
                Triggers::All
            } else {
                Triggers::Only(triggers.iter().map(|t| t.to_string()).collect())
            },
            matches: bot.map(|b| vec![("bot_id".to_string(), Value::String(b.into()))]).unwrap_or_default(),
            secret: None,
            previous_secret: None,
            plugins: Vec::new(),
            origin: crate::config::Origin::Config,
            rate_limit: None,
            fifo: None,
            channels: Vec::new(),
            headers: Vec::new(),
            description: String::new(),
            metadata: Default::default(),
        }
    }

    fn ids(eps: &[Endpoint], trigger: &str, event: &str) -> Vec<String> {
        let v = json::parse(event.as_bytes()).unwrap();
        select(eps, trigger, v.as_object().unwrap()).iter().map(|e| e.id.clone()).collect()
    }

    #[test]
    fn channels_narrow_what_an_endpoint_takes() {
        let all = ep("all", &["*"], None);
        let some = Endpoint { channels: vec!["p1".into(), "p2".into()], ..ep("some", &["*"], None) };
        let sent = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(in_channels(&all, &[]) && in_channels(&all, &sent(&["p9"])));
        assert!(in_channels(&some, &sent(&["p2", "p9"])));
        assert!(!in_channels(&some, &sent(&["p9"])) && !in_channels(&some, &[]));
    }

    #[test]
    fn triggers_filter_unscoped_endpoints() {
        let eps = [ep("a", &["bot.state_change"], None), ep("b", &["*"], None), ep("c", &["x"], None)];
        assert_eq!(ids(&eps, "bot.state_change", r#"{"bot_id":"b1"}"#), ["a", "b"]);
        assert_eq!(ids(&eps, "transcript.update", "{}"), ["b"]);
    }

    #[test]
    fn a_matching_bot_level_endpoint_hides_project_level_ones_whatever_its_triggers() {
        let eps = [ep("project", &["*"], None), ep("bot1", &["transcript.update"], Some("b1"))];
        // bot1's endpoint exists for b1 but not for this trigger: nobody gets it.
        assert!(ids(&eps, "bot.state_change", r#"{"bot_id":"b1"}"#).is_empty());
        assert_eq!(ids(&eps, "transcript.update", r#"{"bot_id":"b1"}"#), ["bot1"]);
        // Other bots still go to the project-level endpoint.
        assert_eq!(ids(&eps, "bot.state_change", r#"{"bot_id":"b2"}"#), ["project"]);
        assert_eq!(ids(&eps, "bot.state_change", "{}"), ["project"]);
    }
}
