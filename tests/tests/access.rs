//! Access: the API key (401 without, 200 with, `/health` open), the refusal to listen beyond
//! loopback without a key, and CORS.

use model_bucket_tests::*;
use std::process::Command;

/// A raw request with extra header lines: the status code and the whole response.
fn request(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    server::read_response(server::open(port, method, path, headers, body, None).unwrap()).unwrap()
}

#[test]
fn the_api_key_guards_everything_but_health() {
    let dir = smol_bucket();
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
    let dir = smol_bucket();
    let key = dir.path().join("key");
    std::fs::write(&key, "from-a-file\n").unwrap();
    let s = Server::start(dir.path(), &["--api-key-file", key.to_str().unwrap()]);
    assert_eq!(request(s.port, "GET", "/v1/models", "", "").0, 401);
    assert_eq!(request(s.port, "GET", "/v1/models", "Authorization: Bearer from-a-file\r\n", "").0, 200);
}

#[test]
fn no_public_address_without_a_key_unless_forced() {
    let dir = smol_bucket();
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
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--cors-origin", "http://app.local", "--api-key", "k"]);
    let preflight = "Origin: http://app.local\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization,content-type\r\n";
    let (status, resp) = request(s.port, "OPTIONS", "/v1/chat/completions", preflight, "");
    assert!(status == 200 || status == 204, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("access-control-allow-origin: http://app.local"), "{resp}");
    let (_, resp) =
        request(s.port, "GET", "/v1/models", "Origin: http://evil.local\r\nAuthorization: Bearer k\r\n", "");
    assert!(!resp.to_ascii_lowercase().contains("access-control-allow-origin"), "{resp}");
}

/// A raw HTTP/1.1 request written exactly as given (`head` holds every header line).
fn raw(port: u16, method: &str, path: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "{method} {path} HTTP/1.1\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .unwrap();
    server::read_response(c).unwrap()
}

#[test]
fn web_pages_cannot_drive_the_server() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--allowed-host", "bucket.lan"]);
    let body = format!(r#"{{"model":"{}","prompt":"Hi","max_tokens":2}}"#, smol_id());
    // What a page may send without a preflight: a text/plain or form body, from its own origin.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let head = format!("Host: localhost\r\nContent-Type: {ct}\r\n");
        let (status, resp) = raw(s.port, "POST", "/v1/completions", &head, &body);
        assert_eq!(status, 415, "{resp}");
        assert!(resp.contains("unsupported_media_type"), "{resp}");
    }
    let head = "Host: localhost\r\nContent-Type: text/plain\r\nOrigin: http://evil.example\r\n";
    assert_eq!(raw(s.port, "POST", "/admin/rescan", head, "").0, 403);
    let head = "Host: localhost\r\nContent-Type: application/json\r\nOrigin: http://evil.example\r\n";
    let (status, resp) = raw(s.port, "POST", "/v1/completions", head, &body);
    assert_eq!(status, 403, "{resp}");
    assert!(resp.contains("origin_not_allowed"), "{resp}");
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let (status, resp) = raw(s.port, "GET", "/v1/models", "Host: evil.example:8080\r\n", "");
    assert_eq!(status, 403, "{resp}");
    assert!(resp.contains("host_not_allowed"), "{resp}");
    // Nothing of the above ran: no worker was started.
    assert!(s.worker_models().is_empty(), "{:?}", s.worker_models());
    // Loopback names, a name given with --allowed-host, and the server's own page pass.
    for host in ["localhost", "127.0.0.1", "[::1]", "bucket.lan"] {
        let head = format!("Host: {host}:{}\r\n", s.port);
        assert_eq!(raw(s.port, "GET", "/v1/models", &head, "").0, 200, "{host}");
    }
    let head =
        format!("Host: localhost:{0}\r\nOrigin: http://localhost:{0}\r\nContent-Type: application/json\r\n", s.port);
    assert_eq!(raw(s.port, "POST", "/v1/completions", &head, &body).0, 200);
    // A client that sends no Content-Type at all is still served (no browser sends a body so).
    assert_eq!(raw(s.port, "POST", "/v1/completions", "Host: localhost\r\n", &body).0, 200);
}

#[test]
fn the_admin_key_alone_opens_admin() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--api-key", "api-1", "--admin-key", "adm-1"]);
    let api = "Authorization: Bearer api-1\r\n";
    let adm = "Authorization: Bearer adm-1\r\n";
    assert_eq!(request(s.port, "GET", "/v1/models", api, "").0, 200);
    assert_eq!(request(s.port, "GET", "/admin/workers", api, "").0, 401, "the API key does not open admin");
    assert_eq!(request(s.port, "POST", "/admin/rescan", api, "").0, 401);
    assert_eq!(request(s.port, "GET", "/admin/workers", adm, "").0, 200);
    let (ok, _, err) =
        run_env(&["ps", "--url", &s.base_url()], &[("EDEN_ADMIN_KEY", "adm-1"), ("EDEN_API_KEY", "api-1")]);
    assert!(ok, "{err}");
}
