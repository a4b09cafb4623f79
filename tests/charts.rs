//! The charts through the real API, on both backends: what was delivered, retried and failed
//! shows in the buckets, per endpoint, per tenant and in all; the overview ranks the failing
//! endpoint first and reports the backlog; a tenant's token sees its own tenant only; and an
//! endpoint's page lists its circuit and disable history.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);

fn totals(v: &Value) -> (u64, u64, u64, u64) {
    let t = &v["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (n("succeeded"), n("failed"), n("retried"), n("attempts"))
}

/// The sum of one field over a series' buckets.
fn summed(v: &Value, field: &str) -> u64 {
    v["buckets"].as_array().unwrap().iter().map(|b| b[field].as_u64().unwrap()).sum()
}

async fn as_token(gw: &TestGateway, token: &str, path: &str) -> (u16, Value) {
    response(gw.http.get(format!("{}{path}", gw.base)).header("authorization", format!("Bearer {token}"))).await
}

#[tokio::test]
async fn charts_count_what_was_delivered_per_endpoint_tenant_and_in_all() {
    for (backend, on) in backends().await {
        let ok = Receiver::start(Behavior::Status(200)).await;
        let bad = Receiver::start(Behavior::Status(500)).await;
        let dir = temp_dir();
        let cfg = set(&base_config(dir.path()), "delivery", "max_retries", "1")
            + &endpoint("ok", &ok.url("/"), r#"["*"]"#)
            + &endpoint("bad", &bad.url("/"), r#"["*"]"#);
        let gw = TestGateway::start(&on(cfg)).await;
        let (s, t) = gw.send_json(reqwest::Method::POST, "/v1/tenants", &json!({"id": "acme"})).await;
        assert_eq!(s, 201, "{t}");
        let (s, e) = gw
            .send_json(
                reqwest::Method::POST,
                "/v1/tenants/acme/endpoints",
                &json!({"url": ok.url("/acme"), "triggers": ["*"]}),
            )
            .await;
        assert_eq!(s, 201, "{e}");
        let acme_endpoint = e["id"].as_str().unwrap().to_owned();

        let mut ids = Vec::new();
        for i in 0..3 {
            let (s, r) = gw.ingest(&state_change(&format!("bot_{i}"))).await;
            assert_eq!(s, 202, "{backend}: {r}");
            ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
        }
        let req = gw
            .http
            .post(format!("{}/v1/tenants/acme/events", gw.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(state_change("acme_bot").to_string());
        let (s, r) = response(req).await;
        assert_eq!(s, 202, "{r}");
        ids.extend(gw.delivery_ids(r["event_id"].as_str().unwrap()).await);
        for id in &ids {
            gw.settled(id, WAIT).await;
        }

        // In all: 4 succeeded (3 + acme's), 3 failed after one retry each: 10 attempts.
        let (s, all) = gw.get("/v1/stats/overview?window=1h").await;
        assert_eq!(s, 200, "{backend}: {all}");
        assert_eq!(totals(&all), (4, 3, 3, 10), "{backend}: {all}");
        assert_eq!(all["buckets"].as_array().unwrap().len(), 60, "one bucket per minute of the hour");
        assert_eq!(summed(&all, "attempts"), 10, "the buckets add up to the totals");
        assert_eq!(all["most_failing"][0]["id"], "bad", "{all}");
        assert_eq!(all["most_failing"][0]["failed"], 3);
        assert_eq!(all["most_failing"].as_array().unwrap().len(), 1, "endpoints without failures are not listed");
        assert_eq!(all["backlog"]["pending"], 0, "{all}");
        assert!(all["query_ms"].as_f64().unwrap() >= 0.0);
        assert!(all["slowest"].as_array().unwrap().len() == 3, "three endpoints made attempts: {all}");

        let (s, okay) = gw.get("/v1/stats?endpoint=ok&window=24h").await;
        assert_eq!(s, 200, "{okay}");
        assert_eq!(totals(&okay), (3, 0, 0, 3), "{okay}");
        assert_eq!(okay["buckets"].as_array().unwrap().len(), 1440);
        assert!(okay["totals"]["latency_p50_ms"].as_f64().is_some() && okay["totals"]["failure_rate"] == 0.0, "{okay}");
        let (_, hours) = gw.get("/v1/stats?endpoint=bad&window=30d").await;
        assert_eq!((hours["resolution"].as_str(), totals(&hours)), (Some("hour"), (0, 3, 3, 6)), "{hours}");
        assert_eq!(hours["totals"]["failure_rate"], 1.0);

        // The tenant's own view: its endpoint only, with its token; another scope is not its.
        let (s, tok) = gw.send_json(reqwest::Method::POST, "/v1/tenants/acme/tokens", &json!({})).await;
        assert_eq!(s, 201, "{tok}");
        let token = tok["token"].as_str().unwrap();
        let (s, mine) = as_token(&gw, token, "/v1/tenants/acme/stats/overview?window=6h").await;
        assert_eq!(s, 200, "{mine}");
        assert_eq!(totals(&mine), (1, 0, 0, 1), "{mine}");
        assert_eq!(mine["slowest"][0]["id"], acme_endpoint.as_str());
        let (s, one) = as_token(&gw, token, &format!("/v1/tenants/acme/stats?endpoint={acme_endpoint}")).await;
        assert_eq!((s, totals(&one)), (200, (1, 0, 0, 1)), "{one}");
        assert_eq!(as_token(&gw, token, "/v1/tenants/acme/stats?endpoint=ok").await.0, 404, "not acme's");
        assert_eq!(as_token(&gw, token, "/v1/tenants/default/stats").await.0, 404, "another tenant");
        assert_eq!(as_token(&gw, token, "/v1/stats").await.0, 401, "the gateway's charts are the admin's");

        let (s, b) = gw.get("/v1/stats?window=2w").await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_query")), "{b}");
        let (s, b) = gw.get("/v1/stats?window=30d&resolution=minute").await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(gw.get("/v1/stats?endpoint=nope").await.0, 404);
        gw.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_endpoint_shows_its_circuit_and_disable_history() {
    let rx = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "breaker_failures", "2")
        + &endpoint("flaky", &rx.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    gw.ingest(&state_change("b")).await;
    let opened = eventually(WAIT, || async {
        let (_, e) = gw.get("/v1/endpoints/flaky").await;
        (e["circuit"] == "open").then_some(e)
    })
    .await;
    let history = opened["health_history"].as_array().unwrap();
    assert_eq!(history[0]["change"], "circuit_opened", "{opened}");
    assert!(history[0]["detail"].as_str().unwrap().contains("2 failures in a row"), "{opened}");
    assert_eq!(gw.patch("/v1/endpoints/flaky", &json!({"enabled": false})).await.0, 200);
    assert_eq!(gw.patch("/v1/endpoints/flaky", &json!({"enabled": true})).await.0, 200);
    let (_, e) = gw.get("/v1/endpoints/flaky").await;
    let changes: Vec<&str> =
        e["health_history"].as_array().unwrap().iter().map(|c| c["change"].as_str().unwrap()).collect();
    assert_eq!(changes, ["enabled", "disabled", "circuit_opened"], "newest first: {e}");
    gw.stop().await.unwrap();
}
