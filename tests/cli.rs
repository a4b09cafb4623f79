//! `hookgate check` and `--help`, run as a user would run them.

use std::process::Command;

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate")).args(args).output().unwrap()
}

#[test]
fn check_accepts_the_example_and_summarises_it() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = hookgate(&["check", "--config", example]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("listen:   127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("local-receiver -> http://127.0.0.1:9000/webhooks triggers: *"), "{stdout}");
    assert!(stdout.contains("demo-bot") && stdout.contains("[match bot_id=\"bot_demo\"] rate 20/s fifo"), "{stdout}");
    assert!(stdout.contains("retention: deliveries 7d, idempotency keys 1d"), "{stdout}");
    assert!(stdout.contains("disable after 5d of failures") && stdout.contains("-> operations"), "{stdout}");
    // The secret never appears in output.
    assert!(!stdout.contains("ZXhhbXBsZS1zZWNyZXQ"), "{stdout}");
}

#[test]
fn check_rejects_a_bad_config_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n[delivery]\nbackoff_initial = \"soon\"\n",
    )
    .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:6"), "{stderr}");
    assert!(stderr.contains("delivery.backoff_initial"), "{stderr}");

    let out = hookgate(&["check", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn check_warns_about_literal_private_targets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
         [[endpoints]]\nid = \"meta\"\nurl = \"https://169.254.169.254/x\"\ntriggers = [\"*\"]\n",
    )
    .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("warning:") && stdout.contains("link-local"), "{stdout}");
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["serve", "--help"], &["check", "--help"]] {
        let out = hookgate(args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}
