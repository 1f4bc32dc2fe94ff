//! Access: the API key (401 without, 200 with, `/health` open), the refusal to listen beyond
//! loopback without a key, and CORS.

use model_bucket_tests::*;
use std::process::Command;

fn bucket() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    dir
}

/// A raw request with extra header lines: the status code and the whole response.
fn request(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    server::read_response(server::open(port, method, path, headers, body, None).unwrap()).unwrap()
}

#[test]
fn the_api_key_guards_everything_but_health() {
    let dir = bucket();
    let s = Server::start(dir.path(), &["--api-key", "sk-local-123"]);
    assert_eq!(request(s.port, "GET", "/health", "", "").0, 200);
    let (status, resp) = request(s.port, "GET", "/v1/models", "", "");
    assert_eq!(status, 401, "{resp}");
    assert!(resp.contains("invalid_api_key") && resp.contains("Bearer"), "{resp}");
    assert_eq!(request(s.port, "GET", "/v1/models", "Authorization: Bearer wrong\r\n", "").0, 401);
    assert_eq!(request(s.port, "GET", "/v1/models", "Authorization: Bearer sk-local-123\r\n", "").0, 200);
    assert_eq!(request(s.port, "GET", "/v1/models", "x-api-key: sk-local-123\r\n", "").0, 200);
    assert_eq!(request(s.port, "GET", "/metrics", "", "").0, 401);
    let body = r#"{"model":"eden_smollm2_135m","prompt":"Hi","max_tokens":2}"#;
    assert_eq!(request(s.port, "POST", "/v1/completions", "", body).0, 401);
    assert_eq!(request(s.port, "POST", "/v1/completions", "Authorization: Bearer sk-local-123\r\n", body).0, 200);
    // The CLI sends the key from EDEN_API_KEY.
    let (ok, out, err) = run_env(&["ps", "--url", &s.base_url()], &[("EDEN_API_KEY", "sk-local-123")]);
    assert!(ok, "{err}");
    assert!(out.contains("eden_smollm2_135m"), "{out}");
    let (ok, _, err) = run_env(&["ps", "--url", &s.base_url()], &[("EDEN_API_KEY", "")]);
    assert!(!ok && err.contains("401"), "{err}");
}

#[test]
fn the_key_can_come_from_a_file() {
    let dir = bucket();
    let key = dir.path().join("key");
    std::fs::write(&key, "from-a-file\n").unwrap();
    let s = Server::start(dir.path(), &["--api-key-file", key.to_str().unwrap()]);
    assert_eq!(request(s.port, "GET", "/v1/models", "", "").0, 401);
    assert_eq!(request(s.port, "GET", "/v1/models", "Authorization: Bearer from-a-file\r\n", "").0, 200);
}

#[test]
fn no_public_address_without_a_key_unless_forced() {
    let dir = bucket();
    let out = Command::new(bin("model-bucket"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--models-dir"])
        .arg(dir.path())
        .env_remove("EDEN_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0 without an API key"), "{err}");
    // Forced, it starts.
    let s = Server::start(dir.path(), &["--host", "0.0.0.0", "--insecure-no-key"]);
    assert_eq!(request(s.port, "GET", "/v1/models", "", "").0, 200);
}

#[test]
fn cors_answers_preflights_for_allowed_origins() {
    let dir = bucket();
    let s = Server::start(dir.path(), &["--cors-origin", "http://app.local", "--api-key", "k"]);
    let preflight = "Origin: http://app.local\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization,content-type\r\n";
    let (status, resp) = request(s.port, "OPTIONS", "/v1/chat/completions", preflight, "");
    assert!(status == 200 || status == 204, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("access-control-allow-origin: http://app.local"), "{resp}");
    let (_, resp) =
        request(s.port, "GET", "/v1/models", "Origin: http://evil.local\r\nAuthorization: Bearer k\r\n", "");
    assert!(!resp.to_ascii_lowercase().contains("access-control-allow-origin"), "{resp}");
}
