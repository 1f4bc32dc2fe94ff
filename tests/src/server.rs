//! A `model-bucket serve` process on a free loopback port, for tests.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    /// The loopback address it listens on (127.0.0.1 unless started with [`Server::start_at`]).
    pub host: IpAddr,
    pub port: u16,
    log: tempfile::NamedTempFile,
    /// Where its workers keep prompt prefixes between runs (a folder of its own, so tests never
    /// share or touch the user's cache).
    pub kv_dir: tempfile::TempDir,
    /// Where it keeps stored Responses, likewise.
    pub responses_dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on `models_dir` with extra flags and waits until `/health` answers.
    pub fn start(models_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(models_dir, extra, &[])
    }

    /// Like [`Server::start`], with extra environment variables for the server (and its workers).
    pub fn start_with_env(models_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_at(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), models_dir, extra, env)
    }

    /// Like [`Server::start_with_env`], listening on `addr` (a loopback address; port 0: a free
    /// one).
    pub fn start_at(addr: SocketAddr, models_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let port = match addr.port() {
            0 => TcpListener::bind((addr.ip(), 0)).and_then(|l| l.local_addr()).expect("free port").port(),
            p => p,
        };
        let host = addr.ip();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let kv_dir = tempfile::tempdir().expect("kv cache folder");
        // Stored Responses too stay out of the user's cache (`--responses-dir` wins).
        let responses_dir = tempfile::tempdir().expect("responses folder");
        let child = Command::new(crate::bin("model-bucket"))
            .args(["serve", "--port", &port.to_string(), "--models-dir"])
            .arg(models_dir)
            .args(extra)
            // Flags that name a host (0.0.0.0 reaches this one too) win over `addr`'s.
            .args(if extra.contains(&"--host") { vec![] } else { vec!["--host".to_string(), host.to_string()] })
            .args(crate::worker::one_thread_unless_asked(extra))
            .env("EDEN_LOG", "info")
            .env("EDEN_KV_CACHE_DIR", kv_dir.path())
            .env("EDEN_RESPONSES_DIR", responses_dir.path().join("store"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn model-bucket serve");
        let mut s = Server { child, host, port, log, kv_dir, responses_dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = s.get("/health") {
                return s;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("server exited at start ({status}):\n{}", s.log());
            }
            assert!(Instant::now() < deadline, "server did not answer /health:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// What the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The pid of `model`'s worker, if it is loaded.
    pub fn worker_pid(&self, model: &str) -> Option<u32> {
        let (_, body) = self.get("/v1/models").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"].as_array()?.iter().find(|m| m["id"] == model)?["worker"]["pid"].as_u64().map(|p| p as u32)
    }

    /// `model`'s row of `/admin/workers` (`Null` when it has none).
    pub fn worker_row(&self, model: &str) -> serde_json::Value {
        let v = self.get_json("/admin/workers");
        let rows = v["workers"].as_array().into_iter().flatten();
        rows.into_iter().find(|w| w["model"] == model).cloned().unwrap_or(serde_json::Value::Null)
    }

    /// The sum of the `/metrics` series whose lines start with `prefix` (a name and `{`).
    pub fn metric_sum(&self, prefix: &str) -> u64 {
        let metrics = self.get("/metrics").map(|r| r.1).unwrap_or_default();
        let lines = metrics.lines().filter(|l| l.starts_with(prefix));
        lines.filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    }

    /// A plain HTTP/1.1 POST of a JSON body: (status, headers and body as one string).
    pub fn post(&self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        read_response(open_at(self.addr(), "POST", path, "", body, None)?)
    }

    /// Watches a rolling restart of the workers of `models`, whose pids were `before`: whether
    /// each came back as a new process within 60 s, and the most workers seen not ready at
    /// once meanwhile.
    pub fn watch_restart(&self, models: &[String], before: &[u32]) -> (bool, usize) {
        let mut most_down = 0;
        let restarted = eventually(Duration::from_secs(60), || {
            let v = self.get_json("/admin/workers");
            let down = v["workers"].as_array().expect("workers").iter().filter(|w| w["state"] != "ready").count();
            most_down = most_down.max(down);
            models.iter().zip(before).all(|(m, old)| self.worker_pid(m).is_some_and(|p| p != *old))
        });
        (restarted, most_down)
    }

    /// POST a JSON `body` to `path`, expecting a 200 with JSON, which it returns.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let (status, resp) = self.post(path, &body.to_string()).expect("POST");
        let json = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert_eq!(status, 200, "{path}: {resp}");
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{path}: {e}: {json}"))
    }

    /// The `state` (and `error`, if any) `/v1/models` shows for `model`.
    pub fn model_state(&self, model: &str) -> (String, String) {
        let (_, body) = self.get("/v1/models").expect("GET /v1/models");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let m = v["data"].as_array().expect("data").iter().find(|m| m["id"] == model).expect("model listed").clone();
        (m["state"].as_str().unwrap_or("").to_string(), m["error"].as_str().unwrap_or("").to_string())
    }

    /// `GET path` parsed as JSON; panics on anything but a 200 with JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).expect("GET");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The models `/admin/workers` lists, in order.
    pub fn worker_models(&self) -> Vec<String> {
        let v = self.get_json("/admin/workers");
        v["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["model"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// A plain HTTP/1.1 GET: (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        get_at(self.addr(), path)
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`, a JSON body, `headers` as extra
/// `Name: value\r\n` lines) to a loopback port; the response is read from the returned stream.
pub fn open(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
    read_timeout: Option<Duration>,
) -> std::io::Result<TcpStream> {
    open_at(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port), method, path, headers, body, read_timeout)
}

/// [`open`] for any address.
pub fn open_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
    read_timeout: Option<Duration>,
) -> std::io::Result<TcpStream> {
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(read_timeout)?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(c)
}

/// Reads a whole response: (status, headers and body as one string).
pub fn read_response(mut c: TcpStream) -> std::io::Result<(u16, String)> {
    let mut resp = String::new();
    c.read_to_string(&mut resp)?;
    Ok((resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), resp))
}

/// `GET path`: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    get_at(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port), path)
}

/// [`get`] for any address.
pub fn get_at(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let (status, resp) = read_response(open_at(addr, "GET", path, "", "", None)?)?;
    Ok((status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// Streams `POST path` with a JSON `body` and returns the SSE `data:` payloads as they arrive
/// (a read that waits over `timeout` ends the stream).
pub fn sse_lines(port: u16, path: &str, body: &str, timeout: Duration) -> impl Iterator<Item = String> {
    use std::io::BufRead;
    let c = open(port, "POST", path, "", body, Some(timeout)).expect("send");
    std::io::BufReader::new(c)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
}

/// Whether process `pid` is alive (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// Sends `signal` (e.g. "TERM", "KILL") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill").success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Waits up to `limit` for `cond`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
