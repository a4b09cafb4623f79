//! OpenTelemetry traces, received by a real OTLP/HTTP collector inside the test: the requests
//! are decoded with the official protobuf definitions (`opentelemetry-proto`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

use crate::util::wasm;
use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

/// A collector on 127.0.0.1 that keeps every span it is sent.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            kept.lock().unwrap().extend(scope.spans);
                        }
                    }
                    ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    fn named(&self, name: &str) -> Vec<Span> {
        self.spans.lock().unwrap().iter().filter(|s| s.name == name).cloned().collect()
    }
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One event, with a producer's `traceparent`, a plugin and a retry, gives one trace: the
/// ingest span under the producer's, fan-out and commit under it, the plugin call and both
/// attempts in the trace, the retry linked to the ingest; the receiver gets the attempt's
/// `traceparent`, and the event's trace id is in the API.
#[tokio::test]
async fn one_event_one_trace_with_plugin_and_retry() {
    let collector = Collector::start().await;
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    rx.then([Behavior::Status(500)]);
    let dir = temp_dir();
    let cfg = base_config(dir.path())
        + &endpoint("hooks", &rx.url("/hooks"), r#"["bot.state_change"]"#)
        + &format!(
            "\n[[plugins]]\nname = \"recall\"\npath = \"{}\"\n\n[triggers.\"bot.state_change\"]\nplugins = [\"recall\"]\n",
            wasm::plugin("recall_envelope").display()
        )
        + &format!("\n[telemetry]\nendpoint = \"{}\"\nservice_name = \"hookgate-test\"\n", collector.url);
    let cfg = set(&set(&cfg, "delivery", "backoff_initial", "\"50ms\""), "delivery", "propagate_trace", "true");
    let gw = TestGateway::start(&cfg).await;

    let producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let r = gw
        .http
        .post(format!("{}/v1/events", gw.base))
        .header("authorization", format!("Bearer {INGEST_TOKEN}"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{producer_trace}-{producer_span}-01"))
        .body(state_change("bot_trace").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let event: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let first = rx.next(WAIT).await;
    let second = rx.next(WAIT).await;
    for got in [&first, &second] {
        let tp = got.header("traceparent");
        assert!(tp.starts_with(&format!("00-{producer_trace}-")) && tp.ends_with("-01"), "{tp:?}");
    }
    assert_ne!(first.header("traceparent"), second.header("traceparent"), "each attempt is its own span");
    let (_, shown) = gw.get(&format!("/v1/events/{}", event["event_id"].as_str().unwrap())).await;
    assert_eq!(shown["event"]["trace_id"], json!(producer_trace), "{shown}");

    // Everything reaches the collector (the queue exports in batches).
    eventually(WAIT, || async { (collector.named("hookgate.attempt").len() == 2).then_some(()) }).await;
    let one = |name: &str| {
        let spans = collector.named(name);
        assert_eq!(spans.len(), 1, "{name}: {spans:?}");
        spans.into_iter().next().unwrap()
    };
    let ingest = one("hookgate.ingest");
    assert_eq!(hex(&ingest.trace_id), producer_trace);
    assert_eq!(hex(&ingest.parent_span_id), producer_span, "the producer's span is the parent");
    assert_eq!(attribute(&ingest, "hookgate.trigger"), Some(AnyValue::StringValue("bot.state_change".into())));
    assert_eq!(
        attribute(&ingest, "hookgate.event.id"),
        Some(AnyValue::StringValue(event["event_id"].as_str().unwrap().into()))
    );
    for name in ["hookgate.fanout", "hookgate.commit", "hookgate.plugin"] {
        let span = one(name);
        assert_eq!(hex(&span.trace_id), producer_trace, "{name}");
        assert_eq!(span.parent_span_id, ingest.span_id, "{name} is under the ingest span");
    }
    let plugin = one("hookgate.plugin");
    assert_eq!(attribute(&plugin, "hookgate.plugin"), Some(AnyValue::StringValue("recall".into())));
    assert_eq!(attribute(&plugin, "hookgate.plugin.decision"), Some(AnyValue::StringValue("replace".into())));
    let mut attempts = collector.named("hookgate.attempt");
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    for (i, (span, got)) in attempts.iter().zip([&first, &second]).enumerate() {
        assert_eq!(hex(&span.trace_id), producer_trace);
        assert_eq!(span.parent_span_id, ingest.span_id);
        assert_eq!(attribute(span, "hookgate.attempt.number"), Some(AnyValue::IntValue(i as i64 + 1)));
        let status = if i == 0 { 500 } else { 200 };
        assert_eq!(attribute(span, "http.response.status_code"), Some(AnyValue::IntValue(status)));
        assert_eq!(
            got.header("traceparent"),
            format!("00-{producer_trace}-{}-01", hex(&span.span_id)),
            "the receiver got the attempt's own span"
        );
    }
    assert!(attempts[0].links.is_empty());
    assert_eq!(attempts[1].links.len(), 1, "the retry links back to the ingest");
    assert_eq!(attempts[1].links[0].span_id, ingest.span_id);
    assert_eq!(attribute(&attempts[0], "error.type"), Some(AnyValue::StringValue("status".into())));
    gw.stop().await.unwrap();
}

/// A collector that is down costs delivery nothing: events are accepted and delivered as
/// usual, and the spans that could not be exported are counted in `/metrics`.
#[tokio::test]
async fn a_collector_that_is_down_never_holds_delivery() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    // A port that nothing listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = base_config(dir.path())
        + &endpoint("hooks", &rx.url("/hooks"), r#"["*"]"#)
        + &format!("\n[telemetry]\nendpoint = \"{dead}\"\n");
    let gw = TestGateway::start(&cfg).await;
    for bot in ["a", "b", "c"] {
        let (s, _) = gw.ingest(&state_change(bot)).await;
        assert_eq!(s, 202);
    }
    for _ in 0..3 {
        rx.next(WAIT).await;
    }
    // Three spans per event and one per attempt, all dropped once their export fails.
    let dropped = eventually(WAIT, || async {
        let n = metric(&gw, "hookgate_telemetry_spans_dropped_total").await;
        (n >= 12.0).then_some(n)
    })
    .await;
    assert_eq!(dropped, 12.0);
    gw.stop().await.unwrap();
}
