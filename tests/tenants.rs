//! Tenants through the real HTTP API: each tenant's secret signs its deliveries (checked with
//! the official `standardwebhooks` crate and Attendee's recipe), fan-out and the override rule
//! stay within a tenant, rotation overlap, scoped tokens, quotas, refusals, and isolation of a
//! tenant with hanging endpoints.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::receiver::Received;
use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

async fn admin(gw: &TestGateway, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
    gw.send_json(method, path, body).await
}

/// A request with a tenant token instead of the admin token.
async fn as_tenant(
    gw: &TestGateway,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req =
        gw.http.request(method, format!("{}{path}", gw.base)).header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    response(req).await
}

async fn ingest_for(gw: &TestGateway, tenant: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = gw
        .http
        .post(format!("{}/v1/tenants/{tenant}/events", gw.base))
        .header("authorization", format!("Bearer {INGEST_TOKEN}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    response(req).await
}

/// Both signatures verify with `secret` (base64 or whsec_), each with the official recipe.
fn verify_with(r: &Received, secret: &str) -> bool {
    let s = hookgate::sign::Secret::parse(secret).unwrap();
    let attendee = hookgate::sign::verify_attendee(&s, &r.body, r.header("x-webhook-signature"));
    let wh = standardwebhooks::Webhook::new(&s.to_whsec()).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, r.header(name).parse().unwrap());
    }
    attendee && wh.verify(&r.body, &headers).is_ok()
}

fn standard_only(r: &Received, secret: &str) -> bool {
    let s = hookgate::sign::Secret::parse(secret).unwrap();
    let wh = standardwebhooks::Webhook::new(&s.to_whsec()).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, r.header(name).parse().unwrap());
    }
    wh.verify(&r.body, &headers).is_ok()
}

async fn create_tenant(gw: &TestGateway, body: Value) -> Value {
    let (s, t) = admin(gw, reqwest::Method::POST, "/v1/tenants", &body).await;
    assert_eq!(s, 201, "{t}");
    t
}

async fn create_endpoint(gw: &TestGateway, tenant: &str, body: Value) -> String {
    let (s, e) = admin(gw, reqwest::Method::POST, &format!("/v1/tenants/{tenant}/endpoints"), &body).await;
    assert_eq!(s, 201, "{e}");
    e["id"].as_str().unwrap().to_owned()
}

/// Two tenants and the default one: each event reaches only its tenant's endpoints, signed with
/// that tenant's secret; Attendee's override rule applies within a tenant; idempotency keys and
/// the delivery log are per tenant; secrets never come back after creation.
#[tokio::test]
async fn tenants_have_their_own_secrets_endpoints_and_log() {
    let mut rx_a = Receiver::start(Behavior::Status(200)).await;
    let mut rx_a_bot = Receiver::start(Behavior::Status(200)).await;
    let mut rx_g = Receiver::start(Behavior::Status(200)).await;
    let mut rx_d = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("project", &rx_d.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;

    let acme = create_tenant(&gw, json!({"id": "acme", "name": "Acme", "metadata": {"plan": "pro"}})).await;
    let secret_a = acme["secret"].as_str().unwrap().to_owned();
    assert!(secret_a.starts_with("whsec_"), "{acme}");
    const GLOBEX_SECRET: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    create_tenant(&gw, json!({"id": "globex", "secret": GLOBEX_SECRET})).await;
    let (_, got) = gw.get("/v1/tenants/acme").await;
    assert!(got.get("secret").is_none() && got["secret_fingerprint"].is_string(), "{got}");
    assert_eq!(got["metadata"]["plan"], "pro");

    create_endpoint(&gw, "acme", json!({"url": rx_a.url("/"), "triggers": ["*"]})).await;
    create_endpoint(&gw, "acme", json!({"url": rx_a_bot.url("/"), "triggers": ["*"], "match": {"bot_id": "b1"}})).await;
    let globex_ep = create_endpoint(&gw, "globex", json!({"url": rx_g.url("/"), "triggers": ["*"]})).await;

    // Acme's project-level endpoint gets acme's events of other bots, signed with acme's secret.
    let (s, r) = ingest_for(&gw, "acme", &state_change("b2"), &[("idempotency-key", "k1")]).await;
    assert_eq!((s, r["deliveries"].as_u64()), (202, Some(1)), "{r}");
    let got = rx_a.next(WAIT).await;
    assert!(verify_with(&got, &secret_a), "acme's secret signs acme's deliveries");
    assert!(!verify_with(&got, GLOBEX_SECRET) && !verify_with(&got, SECRET));
    // Bot b1's own endpoint hides acme's project-level one for b1 (within acme only).
    ingest_for(&gw, "acme", &state_change("b1"), &[]).await;
    assert_eq!(rx_a_bot.next(WAIT).await.json()["bot_id"], "b1");
    // Globex: its own endpoint and secret; the same idempotency key is a different key there.
    let (s, r) = ingest_for(&gw, "globex", &state_change("b1"), &[("idempotency-key", "k1")]).await;
    assert_eq!((s, r["deliveries"].as_u64()), (202, Some(1)), "{r}");
    let got = rx_g.next(WAIT).await;
    assert!(verify_with(&got, GLOBEX_SECRET));
    // The default tenant is what it always was.
    gw.ingest(&state_change("b1")).await;
    assert!(verify_with(&rx_d.next(WAIT).await, SECRET));
    rx_a.assert_silent(Duration::from_millis(200)).await;
    rx_a_bot.assert_silent(Duration::from_millis(1)).await;
    rx_g.assert_silent(Duration::from_millis(1)).await;
    rx_d.assert_silent(Duration::from_millis(1)).await;

    // The log, filtered by tenant from the index, and the tenant's own view of it.
    eventually(WAIT, || async {
        let (_, p) = gw.get("/v1/deliveries?tenant=acme&state=succeeded").await;
        (p["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let (_, page) = gw.get("/v1/tenants/globex/deliveries").await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{page}");
    assert_eq!(
        (data[0]["endpoint_id"].as_str(), data[0]["tenant"].as_str()),
        (Some(globex_ep.as_str()), Some("globex"))
    );
    let (_, page) = gw.get("/v1/deliveries?tenant=default").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");

    // Unknown tenants: 404, nothing stored.
    let (s, b) = ingest_for(&gw, "nobody", &state_change("b1"), &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")), "{b}");
    let (_, all) = gw.get("/v1/deliveries").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4);
    gw.stop().await.unwrap();
}

/// Rotating a tenant's secret: the new one signs at once, the old one still signs next to it
/// during `signing.rotation_overlap`, then is dropped.
#[tokio::test]
async fn rotated_secrets_overlap_then_drop() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "signing", "rotation_overlap", "\"2s\"");
    let gw = TestGateway::start(&cfg).await;
    let old = create_tenant(&gw, json!({"id": "acme"})).await["secret"].as_str().unwrap().to_owned();
    create_endpoint(&gw, "acme", json!({"url": rx.url("/"), "triggers": ["*"]})).await;
    let (s, rotated) = admin(&gw, reqwest::Method::POST, "/v1/tenants/acme/secret/rotate", &json!({})).await;
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let rotated_at = Instant::now();
    ingest_for(&gw, "acme", &state_change("b"), &[]).await;
    let during = rx.next(WAIT).await;
    assert!(verify_with(&during, &new), "the new secret signs");
    assert!(standard_only(&during, &old), "the old one still verifies during the overlap");
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    // After the overlap only the new one signs (polled: one event per round).
    let deadline = Instant::now() + WAIT;
    let after = loop {
        ingest_for(&gw, "acme", &state_change("b"), &[]).await;
        let r = rx.next(WAIT).await;
        if r.header("webhook-signature").split(' ').count() == 1 {
            break r;
        }
        assert!(Instant::now() < deadline, "the old secret still signs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(rotated_at.elapsed() >= Duration::from_millis(1900), "dropped only after the overlap");
    assert!(verify_with(&after, &new) && !standard_only(&after, &old));
    gw.stop().await.unwrap();
}

/// A tenant token opens that tenant's routes only: other tenants are a 404, admin routes and
/// ingest are refused, revoked and expired tokens stop working. Tokens are shown once.
#[tokio::test]
async fn tenant_tokens_are_scoped() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    create_tenant(&gw, json!({"id": "acme"})).await;
    create_tenant(&gw, json!({"id": "globex"})).await;
    create_endpoint(&gw, "globex", json!({"url": rx.url("/"), "triggers": ["*"]})).await;
    let (_, r) = ingest_for(&gw, "globex", &state_change("b"), &[]).await;
    rx.next(WAIT).await;
    let globex_delivery = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);

    let (s, tok) = admin(&gw, reqwest::Method::POST, "/v1/tenants/acme/tokens", &json!({})).await;
    assert_eq!(s, 201, "{tok}");
    let token = tok["token"].as_str().unwrap().to_owned();
    let get = |path: String| {
        let (gw, token) = (&gw, token.clone());
        async move { as_tenant(gw, &token, reqwest::Method::GET, &path, None).await }
    };
    assert_eq!(get("/v1/tenants/acme/deliveries".into()).await.0, 200);
    assert_eq!(get("/v1/tenants/acme".into()).await.0, 200);
    let (s, b) = as_tenant(
        &gw,
        &token,
        reqwest::Method::POST,
        "/v1/tenants/acme/endpoints",
        Some(&json!({"url": rx.url("/a"), "triggers": ["*"]})),
    )
    .await;
    assert_eq!(s, 201, "a tenant manages its own endpoints: {b}");
    for path in ["/v1/tenants/globex/deliveries", "/v1/tenants/globex", "/v1/tenants/globex/endpoints"] {
        let (s, b) = get(path.into()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {b}");
    }
    assert_eq!(get(format!("/v1/tenants/acme/deliveries/{globex_delivery}")).await.0, 404);
    for path in ["/v1/deliveries", "/v1/tenants", "/v1/endpoints", "/v1/tenants/acme/tokens"] {
        assert_eq!(get(path.into()).await.0, 401, "{path} is an admin route");
    }
    let (s, _) =
        as_tenant(&gw, &token, reqwest::Method::POST, "/v1/tenants/acme/events", Some(&state_change("b"))).await;
    assert_eq!(s, 401, "a tenant token cannot ingest");

    let (_, list) = gw.get("/v1/tenants/acme/tokens").await;
    let listed = &list["data"][0];
    assert!(listed.get("token").is_none() && listed["fingerprint"].is_string(), "{list}");
    let (s, _) = admin(
        &gw,
        reqwest::Method::DELETE,
        &format!("/v1/tenants/acme/tokens/{}", listed["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(get("/v1/tenants/acme/deliveries".into()).await.0, 401, "revoked");

    let (_, short) = admin(&gw, reqwest::Method::POST, "/v1/tenants/acme/tokens", &json!({"expires_in": "1s"})).await;
    let short = short["token"].as_str().unwrap().to_owned();
    assert_eq!(as_tenant(&gw, &short, reqwest::Method::GET, "/v1/tenants/acme", None).await.0, 200);
    let (s, b) = eventually(WAIT, || async {
        let r = as_tenant(&gw, &short, reqwest::Method::GET, "/v1/tenants/acme", None).await;
        (r.0 != 200).then_some(r)
    })
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("token_expired")), "{b}");
    gw.stop().await.unwrap();
}

/// Quotas and refusals: `max_endpoints`, `max_events_per_second` (429 with Retry-After, nothing
/// stored), bad ids, duplicates, deleting with pending deliveries, replayed portal codes.
#[tokio::test]
async fn quotas_and_bad_input_change_nothing() {
    let rx = Receiver::start(Behavior::Hang).await;
    let dir = temp_dir();
    // The quota's bucket follows the injected clock, so its bound is exact, not a rate.
    let clock = hookgate::clock::ManualClock::starting_now();
    let gw = TestGateway::start_with(
        &base_config(dir.path()),
        hookgate::Hooks { clock: clock.clone(), ..Default::default() },
    )
    .await;
    create_tenant(&gw, json!({"id": "small", "max_endpoints": 2, "max_events_per_second": 2})).await;
    for _ in 0..2 {
        create_endpoint(&gw, "small", json!({"url": rx.url("/"), "triggers": ["*"]})).await;
    }
    let (s, b) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/tenants/small/endpoints",
        &json!({"url": rx.url("/"), "triggers": ["*"]}),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("quota_exceeded")), "{b}");

    // `max_events_per_second = 2` is a bucket of one second's worth: with the clock standing
    // still, exactly 2 of 6 are accepted; half a second refills exactly one more.
    let send = |n: usize| {
        let gw = &gw;
        async move {
            let (mut accepted, mut limited) = (0, 0);
            for _ in 0..n {
                let r = gw
                    .http
                    .post(format!("{}/v1/tenants/small/events", gw.base))
                    .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(state_change("b").to_string())
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    202 => accepted += 1,
                    429 => {
                        assert!(r.headers().get("retry-after").is_some());
                        limited += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            (accepted, limited)
        }
    };
    assert_eq!(send(6).await, (2, 4), "(accepted, limited) by a 2/s quota with the clock still");
    clock.advance(Duration::from_millis(500));
    assert_eq!(send(3).await, (1, 2), "half a second later");
    let accepted = 3;
    let (_, page) = gw.get("/v1/tenants/small/deliveries?limit=200").await;
    assert_eq!(page["data"].as_array().unwrap().len(), accepted * 2, "refused events stored nothing");

    for (body, code) in [
        (json!({"id": "bad id"}), 400),
        (json!({"id": "default"}), 400),
        (json!({"id": "small"}), 409),
        (json!({"id": "x", "secret": "short"}), 400),
        (json!({"id": "x", "colour": "red"}), 400),
        (json!({"id": "x", "max_endpoints": 0}), 400),
    ] {
        let (s, b) = admin(&gw, reqwest::Method::POST, "/v1/tenants", &body).await;
        assert_eq!(s, code, "{body} => {b}");
    }
    assert_eq!(gw.get("/v1/tenants/x").await.0, 404, "nothing of a refused body is stored");
    // Pending deliveries (the receiver hangs) block a delete unless forced.
    let (s, b) = admin(&gw, reqwest::Method::DELETE, "/v1/tenants/small", &json!({})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("tenant_has_pending_deliveries")), "{b}");
    let (s, _) = admin(&gw, reqwest::Method::DELETE, "/v1/tenants/default", &json!({})).await;
    assert_eq!(s, 409, "the default tenant stays");
    let (s, _) = admin(&gw, reqwest::Method::DELETE, "/v1/tenants/small?force=true", &json!({})).await;
    assert_eq!(s, 204);
    assert_eq!(gw.get("/v1/tenants/small").await.0, 404);
    assert_eq!(gw.get("/v1/tenants/small/endpoints").await.0, 404);

    create_tenant(&gw, json!({"id": "portal"})).await;
    let (s, link) = admin(&gw, reqwest::Method::POST, "/v1/tenants/portal/portal", &json!({"expires_in": "1m"})).await;
    assert_eq!(s, 201, "{link}");
    let code = link["url"].as_str().unwrap().split("#portal=").nth(1).unwrap().to_owned();
    let exchange = || {
        let (gw, code) = (&gw, code.clone());
        async move {
            response(
                gw.http
                    .post(format!("{}/v1/portal/session", gw.base))
                    .header("content-type", "application/json")
                    .body(json!({"code": code}).to_string()),
            )
            .await
        }
    };
    let (s, session) = exchange().await;
    assert_eq!((s, session["tenant"].as_str()), (201, Some("portal")), "{session}");
    let (s, b) = exchange().await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("portal_code_invalid")), "no replay: {b}");
    gw.stop().await.unwrap();
}

/// One tenant's hanging endpoints do not delay another tenant's deliveries: it can hold at most
/// `max_in_flight_per_tenant` slots, and as much of the scan.
#[tokio::test]
async fn a_tenant_with_hanging_endpoints_does_not_delay_another() {
    let hang = Receiver::start(Behavior::Hang).await;
    let mut fast = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path());
    let cfg = set(&cfg, "delivery", "timeout", "\"5s\"");
    let cfg = set(&cfg, "delivery", "max_in_flight", "40");
    let cfg = set(&cfg, "delivery", "max_in_flight_per_endpoint", "4");
    let cfg = set(&cfg, "delivery", "max_in_flight_per_tenant", "20");
    let gw = TestGateway::start(&cfg).await;
    create_tenant(&gw, json!({"id": "slow", "max_endpoints": 20})).await;
    create_tenant(&gw, json!({"id": "healthy"})).await;
    for i in 0..20 {
        create_endpoint(&gw, "slow", json!({"url": hang.url(&format!("/{i}")), "triggers": ["*"]})).await;
    }
    create_endpoint(&gw, "healthy", json!({"url": fast.url("/"), "triggers": ["*"]})).await;
    // 20 events x 20 endpoints: far more hanging attempts than there are slots.
    for _ in 0..20 {
        let (s, _) = ingest_for(&gw, "slow", &state_change("b"), &[]).await;
        assert_eq!(s, 202);
    }
    eventually(WAIT, || async { (metric(&gw, "hookgate_pending_deliveries").await >= 400.0).then_some(()) }).await;
    for i in 0..5 {
        let sent = Instant::now();
        ingest_for(&gw, "healthy", &state_change(&format!("h{i}")), &[]).await;
        fast.next(WAIT).await;
        let took = sent.elapsed();
        assert!(took < Duration::from_millis(1500), "a healthy tenant's delivery took {took:?}");
    }
    drop(hang);
    gw.stop().await.unwrap();
}

/// A tenant declared in the file: its endpoints (`tenant = "..."`) get its events signed with
/// its secret, and the API cannot change it.
#[tokio::test]
async fn tenants_from_the_file_sign_and_are_read_only() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    const FILE_SECRET: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let cfg = base_config(dir.path())
        + &format!("\n[[tenants]]\nid = \"filed\"\nname = \"From the file\"\nsecret = \"{FILE_SECRET}\"\n")
        + &endpoint("hooks", &rx.url("/"), r#"["*"]"#)
        + "tenant = \"filed\"\n";
    let gw = TestGateway::start(&cfg).await;
    let (s, r) = ingest_for(&gw, "filed", &state_change("b"), &[]).await;
    assert_eq!((s, r["deliveries"].as_u64()), (202, Some(1)), "{r}");
    assert!(verify_with(&rx.next(WAIT).await, FILE_SECRET));
    let (s, r) = gw.ingest(&state_change("b")).await;
    assert_eq!((s, r["deliveries"].as_u64()), (202, Some(0)), "the default tenant has no endpoint: {r}");
    let (_, t) = gw.get("/v1/tenants/filed").await;
    assert_eq!((t["source"].as_str(), t["endpoints"].as_u64()), (Some("config"), Some(1)), "{t}");
    for (method, path) in [
        (reqwest::Method::PATCH, "/v1/tenants/filed"),
        (reqwest::Method::POST, "/v1/tenants/filed/secret/rotate"),
        (reqwest::Method::DELETE, "/v1/tenants/filed"),
    ] {
        let (s, b) = admin(&gw, method, path, &json!({"name": "x"})).await;
        assert_eq!((s, b["error"]["code"].as_str()), (409, Some("tenant_read_only")), "{path}: {b}");
    }
    gw.stop().await.unwrap();
}

/// A portal link's code expires after its `expires_in`, and the session it is exchanged for
/// lasts one hour: a second before the hour it opens the tenant's routes, at the hour it is
/// refused (`token_expired`). The manual clock stands in for the hour.
#[tokio::test]
async fn portal_codes_and_sessions_expire_on_time() {
    let dir = temp_dir();
    let clock = hookgate::clock::ManualClock::starting_now();
    let gw = TestGateway::start_with(
        &base_config(dir.path()),
        hookgate::Hooks { clock: clock.clone(), ..Default::default() },
    )
    .await;
    create_tenant(&gw, json!({"id": "acme"})).await;
    let link = |expires: &'static str| {
        let gw = &gw;
        async move {
            let (s, link) =
                admin(gw, reqwest::Method::POST, "/v1/tenants/acme/portal", &json!({"expires_in": expires})).await;
            assert_eq!(s, 201, "{link}");
            link["url"].as_str().unwrap().split("#portal=").nth(1).unwrap().to_owned()
        }
    };
    let exchange = |code: String| {
        let gw = &gw;
        async move {
            response(
                gw.http
                    .post(format!("{}/v1/portal/session", gw.base))
                    .header("content-type", "application/json")
                    .body(json!({"code": code}).to_string()),
            )
            .await
        }
    };

    // A code is good until its expiry, not after.
    let late = link("1m").await;
    clock.advance(Duration::from_secs(60));
    let (s, b) = exchange(late).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("portal_code_expired")), "{b}");
    let code = link("1m").await;
    clock.advance(Duration::from_secs(59));
    let (s, session) = exchange(code).await;
    assert_eq!(s, 201, "{session}");
    let token = session["token"].as_str().unwrap().to_owned();

    let read = || as_tenant(&gw, &token, reqwest::Method::GET, "/v1/tenants/acme/deliveries", None);
    assert_eq!(read().await.0, 200);
    clock.advance(Duration::from_millis(3_600_000 - 1));
    assert_eq!(read().await.0, 200, "the session lasts the whole hour");
    clock.advance(Duration::from_millis(1));
    let (s, b) = read().await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("token_expired")), "{b}");
    gw.stop().await.unwrap();
}

/// Hostile top-level field names (U+001F, NUL, `:`, `/`, 10 KB) are accepted, stay in their
/// tenant's log (never in another's, whatever the name spells), can be filtered on, and fail
/// nothing, on both backends. A tenant's `Idempotency-Key` works on both backends and fails none
/// of the requests committed with it.
#[tokio::test]
async fn hostile_field_names_and_tenant_keys_stay_in_their_tenant() {
    let hostile = [
        "x\u{1f}n:globex\u{1f}y".to_owned(),
        "a\u{0}b".to_owned(),
        "n:globex".to_owned(),
        "f:x=1/y".to_owned(),
        "x".repeat(10_000),
    ];
    for (backend, on) in backends().await {
        let rx = Receiver::start(Behavior::Status(200)).await;
        let dir = temp_dir();
        let gw = TestGateway::start(&on(base_config(dir.path()))).await;
        for t in ["acme", "globex"] {
            create_tenant(&gw, json!({"id": t})).await;
            create_endpoint(&gw, t, json!({"url": rx.url(&format!("/{t}")), "triggers": ["*"]})).await;
        }
        // Keyed tenant ingests and plain ones at once, so that they share group commits.
        let mut tasks = Vec::new();
        for i in 0..24 {
            let (http, base) = (gw.http.clone(), gw.base.clone());
            tasks.push(tokio::spawn(async move {
                let (path, key) = if i % 2 == 0 {
                    ("/v1/tenants/acme/events".to_owned(), Some(format!("key-{}", i / 4)))
                } else {
                    ("/v1/events".to_owned(), None)
                };
                let mut req = http
                    .post(format!("{base}{path}"))
                    .header("authorization", format!("Bearer {INGEST_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(json!({"trigger": "keyed.test", "data": {"n": i / 4}}).to_string());
                if let Some(k) = key {
                    req = req.header("idempotency-key", k);
                }
                response(req).await
            }));
        }
        let mut acme_events = HashSet::new();
        for t in tasks {
            let (s, v) = t.await.unwrap();
            assert_eq!(s, 202, "{backend}: {v}");
            if v["event_id"].is_string() {
                acme_events.insert(v["event_id"].as_str().unwrap().to_owned());
            }
        }
        // 12 keyed requests in 6 keys (each twice), 12 plain ones.
        assert_eq!(acme_events.len(), 12 / 2 + 12, "{backend}: one event per key");

        for name in &hostile {
            let mut body = serde_json::Map::new();
            body.insert("trigger".into(), json!("hostile.names"));
            body.insert(name.clone(), json!("v"));
            body.insert("data".into(), json!({}));
            let (s, v) = ingest_for(&gw, "acme", &Value::Object(body), &[]).await;
            assert_eq!(s, 202, "{backend}: field name of {} bytes: {v}", name.len());
        }
        let count = |path: String| {
            let gw = &gw;
            async move {
                let (s, page) = gw.get(&path).await;
                assert_eq!(s, 200, "{backend}: {path}: {page}");
                page["data"].as_array().unwrap().len()
            }
        };
        assert_eq!(count("/v1/tenants/globex/deliveries?limit=200".into()).await, 0, "{backend}");
        assert_eq!(count("/v1/deliveries?tenant=globex&limit=200".into()).await, 0, "{backend}");
        assert_eq!(count("/v1/tenants/acme/deliveries?trigger=hostile.names".into()).await, hostile.len());
        assert_eq!(count("/v1/deliveries?trigger=hostile.names".into()).await, hostile.len(), "{backend}");
        // A filter on a hostile name finds its own event only.
        for name in hostile.iter().filter(|n| n.len() <= 128) {
            let q: String = url::form_urlencoded::Serializer::new(String::new()).append_pair(name, "v").finish();
            assert_eq!(count(format!("/v1/deliveries?{q}")).await, 1, "{backend}: filter on {name:?}");
        }
        gw.stop().await.unwrap();
    }
}

/// A tenant removed from the file (and reloaded) leaves endpoints behind: their deliveries are
/// never signed with another key (the default `[signing]` secret is trusted by other
/// receivers): they fail `tenant_gone`, an admin lists and deletes such endpoints, and a
/// delivery is resendable once the tenant is back. Its tokens are revoked with it.
#[tokio::test]
async fn a_removed_tenants_endpoints_never_sign_with_another_key() {
    let mut rx = Receiver::start(Behavior::Status(503)).await;
    let dir = temp_dir();
    let path = dir.path().join("hookgate.toml");
    const FILE_SECRET: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let without = set(&base_config(dir.path()), "delivery", "backoff_initial", "\"300ms\"");
    let without = set(&without, "delivery", "max_retries", "10");
    let with = without.clone() + &format!("\n[[tenants]]\nid = \"filed\"\nsecret = \"{FILE_SECRET}\"\n");
    let gw = TestGateway::start_from_file(&path, &with).await;
    let reload = |text: String| {
        let (gw, path) = (&gw, &path);
        async move {
            std::fs::write(path, text).unwrap();
            let (s, b) = gw.send_json(reqwest::Method::POST, "/v1/admin/reload", &json!({})).await;
            assert_eq!(s, 200, "{b}");
        }
    };
    let ep = create_endpoint(&gw, "filed", json!({"url": rx.url("/filed"), "triggers": ["*"]})).await;
    let (s, tok) = admin(&gw, reqwest::Method::POST, "/v1/tenants/filed/tokens", &json!({})).await;
    assert_eq!(s, 201, "{tok}");
    let token = tok["token"].as_str().unwrap().to_owned();
    let (s, r) = ingest_for(&gw, "filed", &state_change("b"), &[]).await;
    assert_eq!(s, 202, "{r}");
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    assert!(verify_with(&rx.next(WAIT).await, FILE_SECRET), "signed with the tenant's own secret");

    // The tenant goes: the retry sends nothing and fails tenant_gone.
    reload(without.clone()).await;
    let d = gw.settled(&id, WAIT).await;
    let last = d["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((d["state"].as_str(), last["error"]["kind"].as_str()), (Some("failed"), Some("tenant_gone")), "{d}");
    rx.assert_silent(Duration::from_millis(500)).await;
    let (_, page) = gw.get("/v1/admin/orphaned-endpoints").await;
    let listed: Vec<(&str, &str)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["tenant"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("filed", ep.as_str())], "{page}");

    // Back with the same id: the delivery is resendable and signed with its key; the old
    // token stays revoked.
    reload(with.clone()).await;
    rx.set_default(Behavior::Status(200));
    let (s, b) = gw.send_json(reqwest::Method::POST, &format!("/v1/deliveries/{id}/resend"), &json!({})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
    assert!(verify_with(&rx.next(WAIT).await, FILE_SECRET));
    let (s, b) = as_tenant(&gw, &token, reqwest::Method::GET, "/v1/tenants/filed/deliveries", None).await;
    assert_eq!(s, 401, "a removed tenant's token is revoked: {b}");
    let (_, page) = gw.get("/v1/admin/orphaned-endpoints").await;
    assert_eq!(page["data"], json!([]), "{page}");

    // Gone again: the admin deletes the endpoint it left.
    reload(without).await;
    let path_of = format!("/v1/admin/orphaned-endpoints/filed/{ep}");
    let (s, _) = gw.send_json(reqwest::Method::DELETE, &path_of, &json!({})).await;
    assert_eq!(s, 204);
    let (_, page) = gw.get("/v1/admin/orphaned-endpoints").await;
    assert_eq!(page["data"], json!([]), "{page}");
    let (s, _) = gw.send_json(reqwest::Method::DELETE, &path_of, &json!({})).await;
    assert_eq!(s, 404);
    gw.stop().await.unwrap();
}

/// Deleting a tenant revokes its tokens and unredeemed portal codes at once, and its id cannot
/// be taken by a new tenant while its history is in the log (which stays visible to admins).
#[tokio::test]
async fn a_deleted_tenants_id_and_credentials_are_not_inherited() {
    let rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    create_tenant(&gw, json!({"id": "acme"})).await;
    create_endpoint(&gw, "acme", json!({"url": rx.url("/acme"), "triggers": ["*"]})).await;
    let (s, tok) = admin(&gw, reqwest::Method::POST, "/v1/tenants/acme/tokens", &json!({})).await;
    assert_eq!(s, 201, "{tok}");
    let token = tok["token"].as_str().unwrap().to_owned();
    let (s, link) = admin(&gw, reqwest::Method::POST, "/v1/tenants/acme/portal", &json!({})).await;
    assert_eq!(s, 201, "{link}");
    let code = link["url"].as_str().unwrap().split("#portal=").nth(1).unwrap().to_owned();
    let (s, r) = ingest_for(&gw, "acme", &state_change("b"), &[]).await;
    assert_eq!(s, 202, "{r}");
    let id = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    gw.settled(&id, WAIT).await;

    let (s, b) = admin(&gw, reqwest::Method::DELETE, "/v1/tenants/acme", &json!({})).await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = as_tenant(&gw, &token, reqwest::Method::GET, "/v1/tenants/acme/deliveries", None).await;
    assert_eq!(s, 401, "the token is revoked");
    let (s, b) = response(
        gw.http
            .post(format!("{}/v1/portal/session", gw.base))
            .header("content-type", "application/json")
            .body(json!({"code": code}).to_string()),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("portal_code_invalid")), "the code is revoked: {b}");
    let (s, b) = admin(&gw, reqwest::Method::POST, "/v1/tenants", &json!({"id": "acme"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("tenant_id_has_history")), "{b}");
    assert_eq!(gw.delivery(&id).await["state"], "succeeded", "the history stays for admins");
    create_tenant(&gw, json!({"id": "acme-2"})).await;
    gw.stop().await.unwrap();
}

/// `[signing] main_key` seals the secrets stored through the API: secrets stored in clear are
/// sealed at start, deliveries are still signed with them, a start without the key (or with
/// another) is refused with a clear error, and `hookgate rotate-main-key` re-seals them under a
/// new key.
#[tokio::test]
async fn stored_secrets_are_sealed_under_the_main_key_and_rotate() {
    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const OWN: &str = "whsec_b3duLWVuZHBvaW50LXNlY3JldC0wMTIzNDU2Nzg5YWI=";
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let path = dir.path().join("hookgate.toml");
    let data = dir.path().join("data");
    let plain = base_config(&data);
    let with_key = |k: &str| set(&plain, "signing", "main_key", &format!("\"{k}\""));
    // What is stored, read without any key: clear secrets read, sealed ones are refused.
    let stored_in_clear = || {
        let data = data.clone();
        async move {
            let (store, writer) = hookgate::store::Store::open(&data).unwrap();
            let read = store.tenants().await.map(|t| t.len());
            drop(store);
            writer.finish().await;
            read
        }
    };

    let gw = TestGateway::start_from_file(&path, &plain).await;
    let acme = create_tenant(&gw, json!({"id": "acme"})).await["secret"].as_str().unwrap().to_owned();
    create_endpoint(&gw, "acme", json!({"url": rx.url("/acme"), "triggers": ["*"]})).await;
    let (s, b) = gw
        .send_json(
            reqwest::Method::POST,
            "/v1/endpoints",
            &json!({"url": rx.url("/own"), "triggers": ["*"], "secret": OWN}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    gw.stop().await.unwrap();
    assert_eq!(stored_in_clear().await.expect("without a main key, secrets are stored in clear"), 1);

    // Started with a key: what was in clear is sealed, and still signs.
    delivers_signed(&path, &with_key(K1), &mut rx, &acme, OWN).await;
    let err = stored_in_clear().await.expect_err("sealed at start");
    assert!(err.to_string().contains("main_key"), "{err}");

    // Without the key, or with another, the gateway does not start.
    let hookgate = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for cfg in [plain.clone(), with_key(K2)] {
        std::fs::write(&path, &cfg).unwrap();
        let (ok, _, err) = hookgate(&["serve", "--config", path.to_str().unwrap()], &[]);
        assert!(!ok && err.contains("main_key"), "{err}");
        assert!(!err.contains(K1) && !err.contains(K2), "no key is printed: {err}");
    }

    // Rotation: the file still names K1; the new key comes from the environment.
    std::fs::write(&path, with_key(K1)).unwrap();
    let (ok, out, err) =
        hookgate(&["rotate-main-key", "--config", path.to_str().unwrap()], &[("HOOKGATE_NEW_MAIN_KEY", K2)]);
    assert!(ok && out.contains("re-sealed 2 stored record(s)"), "{out}{err}");
    std::fs::write(&path, with_key(K1)).unwrap();
    let (ok, _, err) = hookgate(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("main_key"), "the old key no longer opens them: {err}");
    delivers_signed(&path, &with_key(K2), &mut rx, &acme, OWN).await;
}

/// Starts the gateway from `cfg`: a delivery of tenant acme is signed with `acme`'s secret and
/// one to the default tenant's endpoint `/own` with `own`, whichever key sealed them.
async fn delivers_signed(path: &std::path::Path, cfg: &str, rx: &mut Receiver, acme: &str, own: &str) {
    let gw = TestGateway::start_from_file(path, cfg).await;
    let (s, r) = ingest_for(&gw, "acme", &state_change("b"), &[]).await;
    assert_eq!(s, 202, "{r}");
    assert!(verify_with(&rx.next(WAIT).await, acme), "the tenant's secret signs");
    let (s, r) = gw.ingest(&state_change("b")).await;
    assert_eq!(s, 202, "{r}");
    let got = rx.next(WAIT).await;
    assert_eq!(got.path, "/own");
    assert!(verify_with(&got, own), "the endpoint's own secret signs");
    gw.stop().await.unwrap();
}

/// A tenant sees and rotates its own signing secret (as Svix's portal does): `POST
/// .../secret/reveal` with the tenant's token returns the secret that signs now, never cached;
/// another tenant's token gets 404, a GET 405; a rotation by the tenant's token is revealed next
/// and signs its deliveries. The file's tenants are rotated in the file (409).
#[tokio::test]
async fn tenants_reveal_and_rotate_their_own_secret() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let acme = create_tenant(&gw, json!({"id": "acme"})).await;
    create_tenant(&gw, json!({"id": "globex"})).await;
    create_endpoint(&gw, "acme", json!({"url": rx.url("/a"), "triggers": ["*"]})).await;
    let token = |tenant: &'static str| {
        let gw = &gw;
        async move {
            let (s, t) = admin(gw, reqwest::Method::POST, &format!("/v1/tenants/{tenant}/tokens"), &json!({})).await;
            assert_eq!(s, 201, "{t}");
            t["token"].as_str().unwrap().to_owned()
        }
    };
    let (acme_token, globex_token) = (token("acme").await, token("globex").await);

    let reveal = gw
        .http
        .post(format!("{}/v1/tenants/acme/secret/reveal", gw.base))
        .header("authorization", format!("Bearer {acme_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reveal.headers()["cache-control"], "no-store");
    let (s, shown) = (reveal.status().as_u16(), serde_json::from_str::<Value>(&reveal.text().await.unwrap()).unwrap());
    assert_eq!(s, 200, "{shown}");
    assert_eq!(shown["secret"], acme["secret"], "the secret that signs now");
    assert_eq!(shown["fingerprint"], acme["secret_fingerprint"]);
    let (s, b) = as_tenant(&gw, &globex_token, reqwest::Method::POST, "/v1/tenants/acme/secret/reveal", None).await;
    assert_eq!(s, 404, "another tenant's secret is not found: {b}");
    let (s, _) = as_tenant(&gw, &acme_token, reqwest::Method::GET, "/v1/tenants/acme/secret/reveal", None).await;
    assert_eq!(s, 405, "never a GET");
    let (s, _) = as_tenant(&gw, INGEST_TOKEN, reqwest::Method::POST, "/v1/tenants/acme/secret/reveal", None).await;
    assert_eq!(s, 401);

    let (s, rotated) =
        as_tenant(&gw, &acme_token, reqwest::Method::POST, "/v1/tenants/acme/secret/rotate", Some(&json!({}))).await;
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(json!(new), acme["secret"]);
    let (_, shown) = as_tenant(&gw, &acme_token, reqwest::Method::POST, "/v1/tenants/acme/secret/reveal", None).await;
    assert_eq!(shown["secret"], json!(new), "{shown}");
    assert_eq!(shown["also_signing"].as_array().unwrap().len(), 1, "the old one signs beside it: {shown}");
    let (s, _) =
        as_tenant(&gw, &globex_token, reqwest::Method::POST, "/v1/tenants/acme/secret/rotate", Some(&json!({}))).await;
    assert_eq!(s, 404);
    let (s, _) = ingest_for(&gw, "acme", &state_change("b"), &[]).await;
    assert_eq!(s, 202);
    assert!(standard_only(&rx.next(WAIT).await, &new), "signed with the rotated secret");
    gw.stop().await.unwrap();
}

/// Checks every `v1a,` entry of a `webhook-signature` with an Ed25519 library against the
/// `whpk_` public key, as a receiver holding only the public key would.
pub fn v1a_verifies(r: &Received, public_key: &str) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64.decode(public_key.strip_prefix("whpk_").unwrap()).unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let content =
        [r.header("webhook-id").as_bytes(), b".", r.header("webhook-timestamp").as_bytes(), b".", &r.body].concat();
    r.header("webhook-signature").split(' ').filter_map(|e| e.strip_prefix("v1a,")).any(|sig| {
        let sig = ed25519_dalek::Signature::from_slice(&b64.decode(sig).unwrap()).unwrap();
        key.verify_strict(&content, &sig).is_ok()
    })
}

/// Ed25519 (Standard Webhooks `v1a`): a tenant created with `key_type = "ed25519"` signs with a
/// `whsk_` key whose `whpk_` public key its view shows, and sends no Attendee header (that
/// recipe is HMAC); a switch back to HMAC signs with both kinds during the overlap; an endpoint's
/// own `whsk_` secret does the same for that endpoint.
#[tokio::test]
async fn ed25519_keys_sign_v1a_and_switch_with_hmac() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let acme = create_tenant(&gw, json!({"id": "acme", "key_type": "ed25519"})).await;
    let secret = acme["secret"].as_str().unwrap().to_owned();
    let public = acme["public_key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsk_") && public.starts_with("whpk_"), "{acme}");
    create_endpoint(&gw, "acme", json!({"url": rx.url("/acme"), "triggers": ["*"]})).await;
    let (s, _) = ingest_for(&gw, "acme", &state_change("b1"), &[]).await;
    assert_eq!(s, 202);
    let got = rx.next(WAIT).await;
    assert!(got.header("webhook-signature").starts_with("v1a,"), "{}", got.header("webhook-signature"));
    assert!(v1a_verifies(&got, &public), "verifies with the public key alone");
    assert_eq!(got.header("x-webhook-signature"), "", "no Attendee signature from an Ed25519 key");

    // Switch to HMAC: both kinds sign during the overlap.
    let (s, rotated) =
        admin(&gw, reqwest::Method::POST, "/v1/tenants/acme/secret/rotate", &json!({"key_type": "hmac"})).await;
    assert_eq!(s, 200, "{rotated}");
    let hmac = rotated["secret"].as_str().unwrap().to_owned();
    assert!(hmac.starts_with("whsec_") && rotated["public_key"].is_null(), "{rotated}");
    let (s, _) = ingest_for(&gw, "acme", &state_change("b2"), &[]).await;
    assert_eq!(s, 202);
    let got = rx.next(WAIT).await;
    assert!(v1a_verifies(&got, &public), "the old Ed25519 key still signs: {}", got.header("webhook-signature"));
    assert!(verify_with(&got, &hmac), "and the new HMAC secret signs both recipes");

    // An endpoint's own whsk_ secret: its public key in the endpoint's view, v1a on its deliveries.
    let own = hookgate::sign::Secret::generate_ed25519();
    let (s, ep) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/endpoints",
        &json!({"url": rx.url("/own"), "triggers": ["*"], "secret": own.to_whsec()}),
    )
    .await;
    assert_eq!(s, 201, "{ep}");
    assert_eq!(ep["public_key"], json!(own.public_key().unwrap()), "{ep}");
    assert!(!ep.to_string().contains(&own.to_whsec()), "the secret itself is never shown");
    let (s, _) = gw.ingest(&state_change("b3")).await;
    assert_eq!(s, 202);
    let got = rx.next(WAIT).await;
    assert_eq!(got.path, "/own");
    assert!(v1a_verifies(&got, &own.public_key().unwrap()));
    let (s, b) = admin(&gw, reqwest::Method::POST, "/v1/tenants", &json!({"id": "bad", "key_type": "rsa"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_tenant")), "{b}");
    gw.stop().await.unwrap();
}
