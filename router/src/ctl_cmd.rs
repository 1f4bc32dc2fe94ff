//! `ps`, `load`, `unload`: talking to a running server's `/admin` endpoints.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::ServerArgs;
use crate::supervisor::budget::human;

/// The JSON a call returns; an error envelope becomes the error message.
fn call(method: &str, server: &ServerArgs, path: &str) -> Result<Value> {
    let url = format!("{}{path}", server.url.trim_end_matches('/'));
    let mut req = ureq::request(method, &url).timeout(std::time::Duration::from_secs(600));
    let key = server.admin_key.as_deref().filter(|k| !k.is_empty()).or(server.api_key.as_deref());
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        req = req.set("Authorization", &format!("Bearer {key}"));
    }
    let resp = match if method == "POST" { req.send_string("") } else { req.call() } {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            let msg = body["error"]["message"].as_str().unwrap_or("no message").to_string();
            bail!("{code}: {msg}");
        }
        Err(e) => return Err(e).with_context(|| format!("cannot reach the server at {} (is it running?)", server.url)),
    };
    resp.into_json().context("the server's answer is not JSON")
}

pub fn ps(server: &ServerArgs, json: bool) -> Result<()> {
    let v = call("GET", server, "/admin/workers")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let bytes = |v: &Value| v.as_u64().map(human).unwrap_or_else(|| "-".into());
    println!(
        "{:<32} {:<9} {:>8} {:<8} {:>9} {:>6} {:>6} {:>8}",
        "MODEL", "STATE", "PID", "CORES", "MEMORY", "SLOTS", "QUEUE", "RESTARTS"
    );
    for w in v["workers"].as_array().into_iter().flatten() {
        let cores = match w["cores"].as_array() {
            Some(c) => {
                let c: Vec<usize> = c.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect();
                model_bucket_shared::cpus::format_cpu_list(&c)
            }
            None => "all".into(),
        };
        let slots = match w["slots"].as_u64() {
            Some(n) => format!("{}/{n}", w["slots_busy"]),
            None => "-".into(),
        };
        println!(
            "{:<32} {:<9} {:>8} {:<8} {:>9} {:>6} {:>6} {:>8}",
            w["model"].as_str().unwrap_or("?"),
            w["state"].as_str().unwrap_or("?"),
            w["pid"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            cores,
            bytes(&w["memory_bytes"]),
            slots,
            w["queued"],
            w["restarts"],
        );
        if let Some(e) = w["error"].as_str() {
            println!("    error: {e}");
        }
    }
    println!("RAM: {} of {} budget", bytes(&v["ram_used_bytes"]), bytes(&v["ram_budget_bytes"]));
    Ok(())
}

/// `id` as one URL path segment.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Loads `id` and waits until it is ready; meanwhile a terminal shows its loading progress, read
/// from `/v1/models/ID` a few times a second.
pub fn load(server: &ServerArgs, id: &str) -> Result<()> {
    let path = format!("/admin/models/{}/load", segment(id));
    let v = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("loading {msg} [{bar:30}] {percent}%")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(id.to_string());
        let done = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = call("GET", server, &format!("/v1/models/{}", segment(id))) {
                        if let Some(p) = m["progress"].as_f64() {
                            bar.set_position((p * 1000.0) as u64);
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
            let result = call("POST", server, &path);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = watcher.join();
            result
        });
        bar.finish_and_clear();
        result?
    } else {
        call("POST", server, &path)?
    };
    println!(
        "{} {} (pid {}, {})",
        v["model"].as_str().unwrap_or(id),
        v["state"].as_str().unwrap_or("?"),
        v["pid"],
        v["memory_bytes"].as_u64().map(human).unwrap_or_else(|| "-".into())
    );
    Ok(())
}

pub fn unload(server: &ServerArgs, id: &str) -> Result<()> {
    let v = call("POST", server, &format!("/admin/models/{}/unload", segment(id)))?;
    println!("{} {}", v["model"].as_str().unwrap_or(id), v["state"].as_str().unwrap_or("?"));
    Ok(())
}
