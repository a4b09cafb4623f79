//! Plugins written in JavaScript (componentize-js) and Python (componentize-py), built by the
//! suite from `plugins/js` and `plugins/python`, filtering and transforming real deliveries
//! through the gateway; the receiver verifies both signatures over what it got.

use std::time::Duration;

use serde_json::json;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// The default memory cap (32 MiB) fits both runtimes (about 9 and 12 MiB). The deadline is
/// raised from 50 ms because a first call on a loaded test machine can take tens of ms.
const LIMITS: &str = "timeout = \"1s\"\n";

fn table(name: &str, path: &std::path::Path, extra: &str) -> String {
    format!("\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{LIMITS}{extra}\n", path.display())
}

fn utterance(bot: &str, speaker: &str, text: &str) -> serde_json::Value {
    json!({
        "trigger": "transcript.update",
        "bot_id": bot,
        "data": {"speaker_name": speaker, "timestamp_ms": 1, "transcription": {"transcript": text, "words": []}}
    })
}

/// `speaker_filter` (JavaScript) keeps Ana's and Bo's utterances, drops Cy's and empty ones
/// with their reasons in the delivery log, and lets other triggers through unchanged.
#[tokio::test]
async fn javascript_filter_keeps_only_chosen_speakers() {
    let Some(path) = wasm::js_plugin("speaker_filter") else { return };
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &table("speakers", &path, "config = { speakers = [\"Ana\", \"bo\"] }")
        + "\n[triggers.\"transcript.update\"]\nplugins = [\"speakers\"]\n"
        + &endpoint("notes", &rx.url("/notes"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let (_, ana) = gw.ingest(&utterance("b1", "Ana", "hello")).await;
    let (_, cy) = gw.ingest(&utterance("b1", "Cy", "hi")).await;
    let (_, empty) = gw.ingest(&utterance("b1", "Ana", "  ")).await;
    let (_, bo) = gw.ingest(&utterance("b1", "Bo", "case does not matter")).await;
    let (_, state) = gw.ingest(&state_change("b1")).await;

    let mut got = Vec::new();
    for _ in 0..3 {
        let r = rx.next(WAIT).await;
        r.assert_signed();
        let body = r.json();
        got.push(format!(
            "{} {}",
            body["trigger"].as_str().unwrap(),
            body["data"]["speaker_name"].as_str().unwrap_or("")
        ));
    }
    got.sort();
    assert_eq!(got, ["bot.state_change ", "transcript.update Ana", "transcript.update Bo"]);
    rx.assert_silent(Duration::from_millis(300)).await;

    for (event, state, reason) in [
        (&cy, "filtered", Some("speaker \"Cy\" is not in speakers")),
        (&empty, "filtered", Some("empty transcript")),
        (&ana, "succeeded", None),
        (&bo, "succeeded", None),
        (&state, "succeeded", None),
    ] {
        let id = &gw.delivery_ids(event["event_id"].as_str().unwrap()).await[0];
        let d = gw.settled(id, WAIT).await;
        assert_eq!(d["state"], state, "{d}");
        if let Some(reason) = reason {
            assert_eq!(d["filtered"]["plugin"], "speakers", "{d}");
            assert_eq!(d["filtered"]["reason"], reason, "{d}");
        }
    }
    gw.stop().await.unwrap();
}

/// `slack_state` (Python) turns a state change into a Slack message, signed like any body; a
/// bad template fails the delivery with the plugin's own message.
#[tokio::test]
async fn python_transform_reshapes_state_changes_for_slack() {
    let Some(path) = wasm::python_plugin("slack_state") else { return };
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &table("slack", &path, "")
        + &table("slack-bad", &path, "config = { template = \"{nope}\" }")
        + &endpoint("slack", &rx.url("/slack"), r#"["bot.state_change"]"#)
        + "plugins = [\"slack\"]\n"
        + &endpoint("broken", &rx.url("/broken"), r#"["bot.state_change"]"#)
        + "plugins = [\"slack-bad\"]\n";
    let gw = TestGateway::start(&cfg).await;
    let (_, r) = gw.ingest(&state_change("bot_123")).await;
    let got = rx.next(WAIT).await;
    got.assert_signed();
    assert_eq!(got.path, "/slack");
    assert_eq!(got.json(), json!({"text": "Bot bot_123 is now ended (post_processing_completed)"}));
    assert_eq!(
        std::str::from_utf8(&got.body).unwrap(),
        r#"{"text":"Bot bot_123 is now ended (post_processing_completed)"}"#
    );
    rx.assert_silent(Duration::from_millis(300)).await;

    for id in gw.delivery_ids(r["event_id"].as_str().unwrap()).await {
        let d = gw.settled(&id, WAIT).await;
        if d["endpoint_id"] == "broken" {
            assert_eq!(d["state"], "failed", "{d}");
            assert_eq!(d["error"]["kind"], "plugin", "{d}");
            let message = d["error"]["message"].as_str().unwrap();
            assert!(message.contains("bad template") && message.contains("nope"), "{message}");
        } else {
            assert_eq!(d["state"], "succeeded", "{d}");
        }
    }
    gw.stop().await.unwrap();
}
