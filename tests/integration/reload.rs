//! Live reload through the real binary: SIGHUP applies a rewritten config (a
//! probe removed, one added, the unchanged one keeps its monitor), and
//! `POST /-/reload` refuses an invalid one while the old config keeps running.
//! Also the first results at start and at reload: hourly probes run within a
//! minute, not an hour.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{client, eventually, free_port, serve_forever, Proc};

const TOKEN: &str = "reload-token-81c2";

fn probe(name: &str, url: &str) -> String {
    format!(
        r#"
[[probe]]
name = "{name}"
kind = "http"
url = "{url}"
every = "1s"
timeout = "2s"
"#
    )
}

fn write_config(dir: &Path, api: SocketAddr, probes: &[String]) {
    std::fs::write(
        dir.join("sonde.toml"),
        format!(
            "[api]\nlisten = \"{api}\"\ntoken_file = \"api.token\"\n{}",
            probes.concat()
        ),
    )
    .unwrap();
}

async fn probes(http: &reqwest::Client, api: SocketAddr) -> Option<Vec<Value>> {
    let body: Value = http
        .get(format!("http://{api}/api/v1/probes"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["probes"].as_array().cloned()
}

async fn metrics(http: &reqwest::Client, api: SocketAddr) -> Option<String> {
    http.get(format!("http://{api}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_and_post_reload_refuses_an_invalid_one() {
    let web = serve_forever(br#"{"ok":true}"#.to_vec()).await;
    let api = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.token"), format!("{TOKEN}\n")).unwrap();
    let keep = probe("keep", &format!("http://{web}/keep"));
    write_config(
        dir.path(),
        api,
        &[keep.clone(), probe("gone", &format!("http://{web}/gone"))],
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.current_dir(dir.path())
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env("RUST_LOG", "sonde=info");
    let agent = Proc::spawn("sonde", cmd, dir.path());
    let pid = agent.id();
    let http = client();

    // Both probes ran and `keep` is healthy.
    let before = eventually("both probes healthy", Duration::from_secs(30), || async {
        let list = probes(&http, api).await?;
        (list.len() == 2 && list.iter().all(|p| p["state"] == "healthy")).then_some(list)
    })
    .await;
    let keep_since = named(&before, "keep").unwrap()["since"].clone();
    assert!(!keep_since.is_null());

    // Remove `gone`, add `new`, change nothing else; SIGHUP.
    write_config(
        dir.path(),
        api,
        &[keep.clone(), probe("new", &format!("http://{web}/new"))],
    );
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let after = eventually("the new probe set", Duration::from_secs(30), || async {
        let list = probes(&http, api).await?;
        let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
        (names == ["keep", "new"] && !named(&list, "new")?["last_result"].is_null()).then_some(list)
    })
    .await;
    let kept = named(&after, "keep").unwrap();
    assert_eq!(kept["state"], "healthy", "{kept}");
    assert_eq!(kept["since"], keep_since, "the monitor survived: {kept}");
    assert!(!kept["last_result"].is_null());
    let text = eventually(
        "metrics of the new set",
        Duration::from_secs(10),
        || async {
            let text = metrics(&http, api).await?;
            text.contains("probe_success{probe=\"new\"").then_some(text)
        },
    )
    .await;
    assert!(text.contains("probe_success{probe=\"keep\""), "{text}");
    assert!(!text.contains("probe=\"gone\""), "{text}");
    assert!(text.contains("sonde_config_reload_success 1"), "{text}");

    // An invalid config: refused with its errors, the old probes keep running.
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            "[api]\nlisten = \"{api}\"\ntoken_file = \"api.token\"\n{keep}\n[[probe]]\nname = \"bad\"\nkind = \"http\"\nevery = \"1s\"\nnonsense = 1\n"
        ),
    )
    .unwrap();
    let url = format!("http://{api}/-/reload");
    let anonymous = http.post(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let refused = http.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_config", "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("nonsense")),
        "{body}"
    );
    let text = metrics(&http, api).await.unwrap();
    assert!(text.contains("sonde_config_reload_success 0"), "{text}");
    let list = probes(&http, api).await.unwrap();
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["keep", "new"]);
    // Still running: `new` gets fresh results.
    let last = named(&list, "new").unwrap()["last_result"]["started_at"].clone();
    eventually("a later run of `new`", Duration::from_secs(10), || async {
        let list = probes(&http, api).await?;
        (named(&list, "new")?["last_result"]["started_at"] != last).then_some(())
    })
    .await;

    // A valid config again over the API: 200 with the probe count. Its new
    // `[store] path` needs a restart: reported, not applied; the rest applies.
    write_config(
        dir.path(),
        api,
        &["\n[store]\npath = \"other.db\"\n".to_string(), keep],
    );
    let ok = http.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "reloaded", "probes": 1}));
    assert_eq!(probes(&http, api).await.unwrap().len(), 1);
    let log = std::fs::read_to_string(dir.path().join("sonde.log")).unwrap();
    assert!(log.contains("[store] path changed"), "{log}");
    assert!(!dir.path().join("other.db").exists());
    assert!(log.contains("configuration reloaded"), "{log}");
}

/// `n` names of hourly probes whose first run comes within `within` of their
/// start, so that the test waits seconds rather than a minute: the splay inside
/// the first-run minute derives from the name, and a name whose own hourly
/// instant falls within the next minutes (it would be the first run) is left out.
fn names_with_an_early_first_run(n: usize, within: Duration) -> Vec<String> {
    use sonde::clock::Clock;
    use sonde::schedule::{first_run_splay, Schedule};
    let now = sonde::clock::SystemClock.now();
    let clear = now + chrono::Duration::minutes(3);
    (0..)
        .map(|i| format!("hourly-{i}"))
        .filter(|name| {
            let hourly = Schedule::every(Duration::from_secs(3600), name);
            first_run_splay(name) < within && hourly.next_after(now).is_some_and(|t| t > clear)
        })
        .take(n)
        .collect()
}

fn hourly(name: &str, url: &str) -> String {
    format!("\n[[probe]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\nevery = \"1h\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_probes_have_results_at_once_at_start_and_after_a_reload() {
    let web = serve_forever(br#"{"ok":true}"#.to_vec()).await;
    let api = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.token"), format!("{TOKEN}\n")).unwrap();
    let names = names_with_an_early_first_run(3, Duration::from_secs(3));
    let url = |name: &str| format!("http://{web}/{name}");
    let set: Vec<String> = names.iter().map(|n| hourly(n, &url(n))).collect();
    write_config(dir.path(), api, &set);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.current_dir(dir.path())
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env("RUST_LOG", "sonde=info");
    let agent = Proc::spawn("sonde", cmd, dir.path());
    let http = client();

    // Every probe has a result within seconds, not an hour, and the health
    // set is healthy rather than unknown.
    let first = eventually(
        "a result of every probe",
        Duration::from_secs(20),
        || async {
            let list = probes(&http, api).await?;
            (list.len() == 3 && list.iter().all(|p| !p["last_result"].is_null())).then_some(list)
        },
    )
    .await;
    let status = crate::support::sonde_in(
        dir.path(),
        &["status", "--remote", &format!("http://{api}")],
        &[],
    );
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        crate::support::stdout(&status)
    );

    // A reload that changes one probe: it runs again at once; the unchanged
    // ones keep their timing (their next run is an hour away).
    let mut set = set;
    set[0] = hourly(&names[0], &format!("{}?changed", url(&names[0])));
    write_config(dir.path(), api, &set);
    let reloaded = http
        .post(format!("http://{api}/-/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    let started = |list: &[Value], name: &str| {
        named(list, name).unwrap()["last_result"]["started_at"].clone()
    };
    let changed = &names[0];
    let after = eventually(
        "a new result of the changed probe",
        Duration::from_secs(20),
        || async {
            let list = probes(&http, api).await?;
            (started(&list, changed) != started(&first, changed)).then_some(list)
        },
    )
    .await;
    for name in &names[1..] {
        assert_eq!(
            started(&after, name),
            started(&first, name),
            "{name} ran again"
        );
    }
    drop(agent);
}
