//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven through its
//! `chromedriver`) loads the page, filters by bot, opens a failed delivery, presses Resend and
//! sees the new attempt, then disables and enables the endpoint from the endpoints view.

use std::io::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::util::webdriver::{self, Browser};
use crate::util::*;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_filters_opens_and_resends() {
    if !webdriver::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test, but {} or {} is missing (.ci/run installs them)",
            webdriver::CHROMIUM,
            webdriver::CHROMEDRIVER
        );
        // Written straight to stderr, past the test harness's capture, so it is seen.
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED dashboard browser test: {} / {} not found.\n  To run it: apt-get install chromium chromium-driver, then cargo test --locked\n",
            webdriver::CHROMIUM,
            webdriver::CHROMEDRIVER
        );
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
