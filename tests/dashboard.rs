//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven through its
//! `chromedriver`) loads the page, filters by bot, opens a failed delivery, presses Resend and
//! sees the new attempt, then disables and enables the endpoint from the endpoints view.

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
