//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven through its
//! `chromedriver`) loads the page, filters by bot, opens a failed delivery, presses Resend and
//! sees the new attempt, then disables and enables the endpoint from the endpoints view; and
//! the API reference page draws every operation of the OpenAPI document.

use std::time::Duration;

use serde_json::json;

use crate::util::webdriver::{self, Browser};
use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

/// Whether Chromium and chromedriver are here. Under `CI` they must be; elsewhere the test says
/// it skipped, past the harness's capture.
fn browser_available() -> bool {
    if webdriver::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the browser test, but {} or {} is missing (.ci/run installs them)",
        webdriver::CHROMIUM,
        webdriver::CHROMEDRIVER
    );
    skipped(&format!(
        "{} / {} not found. To run it: apt-get install chromium chromium-driver, then cargo test --locked",
        webdriver::CHROMIUM,
        webdriver::CHROMEDRIVER
    ));
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_filters_opens_and_resends() {
    if !browser_available() {
        return;
    }
    let rx = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = base_config(dir.path()) + &endpoint("acme", &rx.url("/hook"), r#"["*"]"#);
    let cfg = set(&cfg, "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    for bot in ["bot_a", "bot_b", "bot_a", "bot_b"] {
        let (s, _) = gw.ingest(&state_change(bot)).await;
        assert_eq!(s, 202);
    }
    eventually(WAIT, || async {
        let (_, p) = gw.get("/v1/deliveries?state=failed").await;
        (p["data"].as_array().unwrap().len() == 4).then_some(())
    })
    .await;

    let browser = Browser::start().await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let run = async {
        browser.goto(&format!("{}/", gw.base)).await;
        browser.find("#token").await.type_text(ADMIN_TOKEN).await;
        browser.find("#save-token").await.click().await;
        browser.wait_for("document.querySelectorAll('#rows tr').length === 4", WAIT).await;
        // The dashboard opens on the overview; the log is one tab away.
        browser.find("#tab-deliveries").await.click().await;

        browser.find("#f-resource-value").await.type_text("bot_a").await;
        browser.find("#f-apply").await.click().await;
        browser
            .wait_for(
                "[...document.querySelectorAll('#rows tr')].length === 2 && \
                 [...document.querySelectorAll('#rows tr')].every(tr => tr.textContent.includes('bot_id=bot_a'))",
                WAIT,
            )
            .await;

        assert_eq!(
            browser.eval("return document.querySelector('#more').offsetParent === null").await,
            json!(true),
            "no next page: no Load more button"
        );
        browser.find("#rows tr[data-state=failed]").await.click().await;
        browser.wait_for("document.querySelector('#detail-state')?.textContent === 'failed'", WAIT).await;
        let body = browser.find("#body").await.text().await;
        assert!(body.contains("\"bot_id\": \"bot_a\""), "the body is shown pretty-printed: {body}");
        assert_eq!(browser.eval("return document.querySelectorAll('#attempts tbody tr').length").await, json!(1));

        rx.set_default(Behavior::Status(200));
        browser.find("#resend").await.click().await;
        browser
            .wait_for(
                "document.querySelector('#detail-state')?.textContent === 'succeeded' && \
                 document.querySelectorAll('#attempts tbody tr').length === 2",
                WAIT,
            )
            .await;
        let newest = browser.find("#attempts tbody tr").await.text().await;
        assert!(newest.contains("(manual)") && newest.contains("200"), "{newest}");
        browser.screenshot(&shot.with_file_name("dashboard-delivery.png")).await;

        // The endpoints view: state, circuit, last hour's success rate, last error, and a
        // button that disables and enables the endpoint through the API.
        browser.find("#tab-endpoints").await.click().await;
        browser
            .wait_for("document.querySelector('#endpoint-rows tr[data-id=acme]')?.dataset.enabled === 'true'", WAIT)
            .await;
        let row = browser.find("#endpoint-rows tr[data-id=acme]").await.text().await;
        assert!(row.contains("enabled") && row.contains("closed"), "{row}");
        assert!(row.contains("20.0 %") && row.contains("of 5"), "1 success in 5 attempts: {row}");
        assert!(row.contains("status") && row.contains("500"), "the last error is shown: {row}");
        browser.find("#endpoint-rows tr[data-id=acme] button.toggle").await.click().await;
        browser
            .wait_for("document.querySelector('#endpoint-rows tr[data-id=acme]')?.dataset.enabled === 'false'", WAIT)
            .await;
        let (_, ep) = gw.get("/v1/endpoints/acme").await;
        assert_eq!(ep["enabled"], false, "the button disabled it through the API: {ep}");
        browser.find("#endpoint-rows tr[data-id=acme] button.toggle").await.click().await;
        browser
            .wait_for("document.querySelector('#endpoint-rows tr[data-id=acme]')?.dataset.enabled === 'true'", WAIT)
            .await;
        assert_eq!(gw.get("/v1/endpoints/acme").await.1["enabled"], true);
    };
    // Keep a screenshot for whoever debugs a failure (or wants to see the page).
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await;
    browser.screenshot(&shot).await;
    browser.quit().await;
    outcome.expect("the browser scenario finished in time");
    gw.stop().await.unwrap();
}

/// A portal link opened in Chromium: the dashboard shows only that tenant's deliveries, creates
/// an endpoint, sends a test event that arrives signed with the tenant's secret, edits the
/// endpoint's URL, and the link does not work twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_link_shows_one_tenant_and_sends_a_test_event() {
    if !browser_available() {
        return;
    }
    let rx = Receiver::start(Behavior::Status(200)).await;
    let mut tester = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let mut secret = String::new();
    for (tenant, name) in [("acme", "Acme Corp"), ("globex", "Globex")] {
        let (s, t) = gw.send_json(reqwest::Method::POST, "/v1/tenants", &json!({"id": tenant, "name": name})).await;
        assert_eq!(s, 201, "{t}");
        if tenant == "acme" {
            secret = t["secret"].as_str().unwrap().to_owned();
        }
        let body = json!({"url": rx.url(&format!("/{tenant}")), "triggers": ["*"]});
        let (s, e) = gw.send_json(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/endpoints"), &body).await;
        assert_eq!(s, 201, "{e}");
    }
    for (tenant, bot) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
        let r = gw
            .http
            .post(format!("{}/v1/tenants/{tenant}/events", gw.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(state_change(bot).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let (s, link) = gw.send_json(reqwest::Method::POST, "/v1/tenants/acme/portal", &json!({})).await;
    assert_eq!(s, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal.png");
    let run = async {
        browser.goto(&url).await;
        browser.wait_for("document.querySelectorAll('#rows tr').length === 2", WAIT).await;
        let rows =
            browser.eval("return [...document.querySelectorAll('#rows tr')].map(tr => tr.textContent).join('|')").await;
        let rows = rows.as_str().unwrap().to_owned();
        assert!(rows.contains("bot_id=a1") && rows.contains("bot_id=a2") && !rows.contains("g1"), "{rows}");
        assert!(browser.find("#portal-name").await.text().await.contains("Acme Corp"));
        assert_eq!(browser.eval("return location.hash").await, json!(""), "the one-time code leaves the address bar");

        browser.find("#tab-endpoints").await.click().await;
        browser.wait_for("document.querySelectorAll('#endpoint-rows tr').length === 1", WAIT).await;
        browser.find("#new-url").await.type_text(&tester.url("/hooks")).await;
        browser.find("#create-endpoint").await.click().await;
        browser.wait_for("document.querySelectorAll('#endpoint-rows tr').length === 2", WAIT).await;
        let test_button = "[...document.querySelectorAll('#endpoint-rows tr')].find(tr => tr.textContent.includes('/hooks')).querySelector('button.test').click(); return true";
        browser.eval(test_button).await;
        let got = tester.next(WAIT).await;
        assert_eq!(got.json()["trigger"], "hookgate.test");
        let s = hookgate::sign::Secret::parse(&secret).unwrap();
        assert!(hookgate::sign::verify_attendee(&s, &got.body, got.header("x-webhook-signature")));
        let wh = standardwebhooks::Webhook::new(&s.to_whsec()).unwrap();
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, got.header(name).parse().unwrap());
        }
        wh.verify(&got.body, &headers).expect("the test event verifies with the tenant's secret");
        browser.wait_for("document.querySelector('#status').textContent.includes('test event sent')", WAIT).await;
        browser.screenshot(&shot.with_file_name("portal-endpoints.png")).await;

        // Edit the endpoint's URL in place; the next test event goes to the new one.
        let row = "[...document.querySelectorAll('#endpoint-rows tr')].find(tr => tr.textContent.includes('/hooks'))";
        browser.eval(&format!("{row}.querySelector('button.edit').click(); return true")).await;
        let new_url = tester.url("/v2");
        browser
            .eval(&format!(
                "const i = document.querySelector('#endpoint-rows input.edit-url'); i.value = {}; \
                 document.querySelector('#endpoint-rows button.save').click(); return true",
                json!(new_url)
            ))
            .await;
        browser.wait_for("document.querySelector('#status').textContent.startsWith('saved')", WAIT).await;
        browser
            .wait_for(
                "[...document.querySelectorAll('#endpoint-rows tr')].some(tr => tr.textContent.includes('/v2'))",
                WAIT,
            )
            .await;
        let row = "[...document.querySelectorAll('#endpoint-rows tr')].find(tr => tr.textContent.includes('/v2'))";
        browser.eval(&format!("{row}.querySelector('button.test').click(); return true")).await;
        assert_eq!(tester.next(WAIT).await.path, "/v2");

        // The link worked once.
        browser.eval("sessionStorage.clear(); return true").await;
        browser.goto("about:blank").await;
        browser.goto(&url).await;
        browser.wait_for("document.querySelector('#empty').textContent.includes('Cannot open the portal')", WAIT).await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await;
    browser.screenshot(&shot).await;
    browser.quit().await;
    outcome.expect("the portal scenario finished in time");
    gw.stop().await.unwrap();
}

/// What the views lacked, at 1400×900: the admin dashboard has a Tenants view that leads into
/// one tenant's deliveries and endpoints; a delivery opened beside a wide list leaves the row's
/// time and state in view; the signing secret is revealed and rotated from the endpoints view,
/// by the admin for a tenant and by the tenant in its portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_view_wide_rows_and_the_signing_secret() {
    if !browser_available() {
        return;
    }
    let rx = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "max_retries", "0");
    let gw = TestGateway::start(&cfg).await;
    let mut secrets = std::collections::HashMap::new();
    for (tenant, name) in [("acme", "Acme Corp"), ("globex", "Globex")] {
        let (s, t) = gw.send_json(reqwest::Method::POST, "/v1/tenants", &json!({"id": tenant, "name": name})).await;
        assert_eq!(s, 201, "{t}");
        secrets.insert(tenant, t["secret"].as_str().unwrap().to_owned());
        let body = json!({"url": rx.url(&format!("/{tenant}/a/rather/long/path/to/the/receiver")), "triggers": ["*"]});
        let (s, e) = gw.send_json(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/endpoints"), &body).await;
        assert_eq!(s, 201, "{e}");
    }
    // Wide rows: long triggers, endpoint ids and resource fields.
    for (tenant, n) in [("acme", 0), ("acme", 1), ("globex", 2)] {
        let event = json!({
            "trigger": "calendar.events_update.with_a_rather_long_trigger_name",
            "calendar_id": format!("cal_{n}_{}", "x".repeat(60)),
            "calendar_deduplication_key": "k".repeat(80),
            "data": {},
        });
        let r = gw
            .http
            .post(format!("{}/v1/tenants/{tenant}/events", gw.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    eventually(WAIT, || async {
        let (_, p) = gw.get("/v1/deliveries?state=failed").await;
        (p["data"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;

    let browser = Browser::start().await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tenants.png");
    let run = async {
        browser.goto(&format!("{}/", gw.base)).await;
        browser.find("#token").await.type_text(ADMIN_TOKEN).await;
        browser.find("#save-token").await.click().await;
        browser.wait_for("document.querySelectorAll('#rows tr').length === 3", WAIT).await;

        // The Tenants view, and into acme's deliveries.
        browser.find("#tab-tenants").await.click().await;
        browser.wait_for("document.querySelector('#tenant-rows tr[data-id=acme]') !== null", WAIT).await;
        let acme = browser.find("#tenant-rows tr[data-id=acme]").await.text().await;
        assert!(acme.contains("Acme Corp") && acme.contains("api"), "{acme}");
        browser.screenshot(&shot).await;
        browser.find("#tenant-rows tr[data-id=acme] button.view").await.click().await;
        browser.wait_for("document.querySelectorAll('#rows tr').length === 2", WAIT).await;
        let rows =
            browser.eval("return [...document.querySelectorAll('#rows tr')].map(tr => tr.textContent).join('|')").await;
        assert!(!rows.as_str().unwrap().contains("globex"), "only acme's deliveries: {rows}");
        assert_eq!(browser.find("#scope-name").await.text().await, "acme");

        // A delivery open beside the wide list: its row's time and state are still in view.
        browser.find("#rows tr").await.click().await;
        browser.wait_for("document.querySelector('#detail-state')?.textContent === 'failed'", WAIT).await;
        browser.screenshot(&shot.with_file_name("tenants-delivery.png")).await;
        let visible = browser
            .eval(
                "const list = document.querySelector('.list').getBoundingClientRect(); \
                 const row = document.querySelector('#rows tr.sel'); \
                 return [0, 1].map(i => { const c = row.cells[i].getBoundingClientRect(); \
                   return c.left >= list.left - 1 && c.right <= list.right + 1 && c.right <= window.innerWidth; })",
            )
            .await;
        assert_eq!(visible, json!([true, true]), "the time and state cells are in view");
        assert_eq!(browser.eval("return document.documentElement.scrollWidth <= window.innerWidth").await, json!(true));

        // The secret, revealed and rotated by the admin in acme's endpoints view.
        browser.find("#tab-endpoints").await.click().await;
        browser.wait_for("!document.querySelector('#secret-panel').hidden", WAIT).await;
        browser.find("#secret-reveal").await.click().await;
        browser.wait_for("document.querySelector('#secret-value').textContent.startsWith('whsec_')", WAIT).await;
        assert_eq!(browser.find("#secret-value").await.text().await, secrets["acme"]);
        browser.find("#secret-rotate").await.click().await;
        browser.find("#secret-rotate-confirm").await.click().await;
        browser.wait_for("document.querySelector('#secret-note').textContent.startsWith('rotated')", WAIT).await;
        let rotated = browser.find("#secret-value").await.text().await;
        assert_ne!(rotated, secrets["acme"]);
        let (_, t) = gw.get("/v1/tenants/acme").await;
        let fingerprint = hookgate::sign::Secret::parse(&rotated).unwrap().fingerprint();
        assert_eq!(t["secret_fingerprint"], json!(fingerprint), "the new secret signs now");

        // And by the tenant in its portal, which has no Tenants view.
        let (s, link) = gw.send_json(reqwest::Method::POST, "/v1/tenants/globex/portal", &json!({})).await;
        assert_eq!(s, 201, "{link}");
        browser.eval("sessionStorage.clear(); return true").await;
        browser.goto("about:blank").await;
        browser.goto(link["url"].as_str().unwrap()).await;
        browser.wait_for("document.querySelectorAll('#rows tr').length === 1", WAIT).await;
        assert_eq!(browser.eval("return document.querySelector('#tab-tenants').hidden").await, json!(true));
        browser.find("#tab-endpoints").await.click().await;
        browser.wait_for("!document.querySelector('#secret-panel').hidden", WAIT).await;
        browser.find("#secret-reveal").await.click().await;
        browser.wait_for("document.querySelector('#secret-value').textContent.startsWith('whsec_')", WAIT).await;
        assert_eq!(browser.find("#secret-value").await.text().await, secrets["globex"]);
        browser.screenshot(&shot.with_file_name("portal-secret.png")).await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await;
    browser.quit().await;
    outcome.expect("the scenario finished in time");
    gw.stop().await.unwrap();
}

/// The sum of the `data-value`s of the chart marks matching `css`, as an expression.
fn sum_of(css: &str) -> String {
    format!("[...document.querySelectorAll({css:?})].reduce((n, m) => n + Number(m.dataset.value), 0)")
}

/// [`sum_of`] as a script that returns it.
fn marks(css: &str) -> String {
    format!("return {}", sum_of(css))
}

/// The charts in Chromium: the overview (the page opens on it) shows the deliveries the test
/// sent, failures as red bars beside green successes, the failing endpoint ranked first and the
/// backlog; the failing endpoint's page shows its own charts and its disable history; a
/// tenant's portal opens on charts of its own deliveries only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_show_the_sent_deliveries_overview_endpoint_page_and_portal() {
    if !browser_available() {
        return;
    }
    let ok = Receiver::start(Behavior::Status(200)).await;
    let bad = Receiver::start(Behavior::Status(500)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "max_retries", "0")
        + &endpoint("ok", &ok.url("/"), r#"["*"]"#)
        + &endpoint("bad", &bad.url("/"), r#"["*"]"#);
    let gw = TestGateway::start(&cfg).await;
    let (s, t) = gw.send_json(reqwest::Method::POST, "/v1/tenants", &json!({"id": "acme", "name": "Acme"})).await;
    assert_eq!(s, 201, "{t}");
    let (s, e) = gw
        .send_json(
            reqwest::Method::POST,
            "/v1/tenants/acme/endpoints",
            &json!({"url": ok.url("/acme"), "triggers": ["*"]}),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    for i in 0..4 {
        assert_eq!(gw.ingest(&state_change(&format!("bot_{i}"))).await.0, 202);
    }
    for i in 0..2 {
        let req = gw
            .http
            .post(format!("{}/v1/tenants/acme/events", gw.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(state_change(&format!("acme_{i}")).to_string());
        assert_eq!(response(req).await.0, 202);
    }
    eventually(WAIT, || async {
        let (_, p) = gw.get("/v1/deliveries?state=pending").await;
        let (_, all) = gw.get("/v1/deliveries").await;
        (p["data"].as_array().unwrap().is_empty() && all["data"].as_array().unwrap().len() == 10).then_some(())
    })
    .await;
    // A disable and an enable by hand, for the endpoint's history.
    assert_eq!(gw.patch("/v1/endpoints/bad", &json!({"enabled": false})).await.0, 200);
    assert_eq!(gw.patch("/v1/endpoints/bad", &json!({"enabled": true})).await.0, 200);
    let (s, link) = gw.send_json(reqwest::Method::POST, "/v1/tenants/acme/portal", &json!({})).await;
    assert_eq!(s, 201, "{link}");

    let browser = Browser::start().await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("overview.png");
    let run = async {
        browser.goto(&format!("{}/", gw.base)).await;
        browser.find("#token").await.type_text(ADMIN_TOKEN).await;
        browser.find("#save-token").await.click().await;
        assert_eq!(browser.eval("return document.querySelector('#overview-view').hidden").await, json!(false));
        browser.wait_for(&format!("{} === 6", sum_of("#ov-deliveries rect.succeeded")), WAIT).await;
        assert_eq!(
            browser.eval(&marks("#ov-deliveries rect.failed")).await,
            json!(4),
            "the failures, in their own bars"
        );
        let fills = browser
            .eval(
                "const f = s => getComputedStyle(document.querySelector('#ov-deliveries rect.' + s)).fill; \
                 return [f('succeeded'), f('failed')]",
            )
            .await;
        assert_ne!(fills[0], fills[1], "failures have their own colour: {fills}");
        assert_eq!(browser.find("#card-failed").await.text().await, "4");
        assert_eq!(browser.find("#card-pending").await.text().await, "0");
        assert_eq!(browser.eval("return document.querySelector('#rank-failing tr').dataset.id").await, json!("bad"));
        assert!(
            browser.eval("return document.querySelectorAll('#ov-latency circle.p95').length").await.as_u64().unwrap()
                >= 1,
            "the latency chart has a point"
        );
        browser.screenshot(&shot).await;

        // The failing endpoint's page: its own charts and its history.
        browser.find("#rank-failing tr[data-id=bad] .endpoint-link").await.click().await;
        browser.wait_for("!document.querySelector('#endpoint-page').hidden && document.querySelector('#endpoint-page').dataset.id === 'bad'", WAIT).await;
        assert_eq!(browser.eval(&marks("#ep-deliveries rect.failed")).await, json!(4));
        assert_eq!(browser.eval(&marks("#ep-deliveries rect.succeeded")).await, json!(0));
        let history = browser.find("#history").await.text().await;
        assert!(
            history.contains("enabled") && history.contains("disabled") && history.contains("by hand"),
            "{history}"
        );
        browser.screenshot(&shot.with_file_name("endpoint-page.png")).await;

        // The portal opens on the tenant's own charts.
        browser.eval("sessionStorage.clear(); return true").await;
        browser.goto("about:blank").await;
        browser.goto(link["url"].as_str().unwrap()).await;
        browser.wait_for(&format!("{} === 2", sum_of("#ov-deliveries rect.succeeded")), WAIT).await;
        assert_eq!(browser.eval(&marks("#ov-deliveries rect.failed")).await, json!(0), "no other tenant's failures");
        assert_eq!(browser.eval("return document.querySelector('#overview-view').hidden").await, json!(false));
        assert_eq!(browser.find("#card-succeeded").await.text().await, "2");
        browser.screenshot(&shot.with_file_name("portal-overview.png")).await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await;
    browser.quit().await;
    outcome.expect("the charts scenario finished in time");
    gw.stop().await.unwrap();
}

/// The API reference page at `/docs` draws every operation of `/openapi.json` in Chromium,
/// grouped by tag, with the body schema of an operation resolved from its `$ref`, and its
/// filter narrows the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_page_in_chromium_lists_every_operation() {
    if !browser_available() {
        return;
    }
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let operations = hookgate::http::operations().len();
    let browser = Browser::start().await;
    let run = async {
        browser.goto(&format!("{}/docs", gw.base)).await;
        browser.wait_for(&format!("document.querySelectorAll('details.op').length === {operations}"), WAIT).await;
        let ingest = browser.find(r#"details[data-route="post /v1/events"]"#).await;
        ingest.click().await;
        let text = ingest.text().await;
        assert!(text.contains("EventIn") && text.contains("trigger: string"), "{text}");
        assert!(text.contains("Token: ingest or admin"), "{text}");
        let svix = browser.find(r#"details[data-route="post /api/v1/app/{app}/msg"]"#).await.text().await;
        assert!(svix.contains("Create a message"), "{svix}");
        browser.find("#filter").await.type_text("event-type").await;
        browser
            .wait_for(
                "[...document.querySelectorAll('details.op')].filter(d => d.style.display !== 'none').length === 6",
                WAIT,
            )
            .await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), run).await;
    browser.quit().await;
    outcome.expect("the reference page scenario finished in time");
    gw.stop().await.unwrap();
}
