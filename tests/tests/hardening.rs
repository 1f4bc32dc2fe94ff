//! Hardening on the real models and with the fake worker: the penalty-window bomb, the router
//! as PID 1, the worker socket's folder, mode and peer check, secrets kept from workers, and
//! requests cut off by a drain that end in an error, never in a clean finish.

use model_bucket_tests::server::{eventually, sse_lines};
use model_bucket_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A streamed completion that never ends by itself (EOS banned, no limit): it holds its slot
/// for as long as its client reads.
fn endless() -> String {
    format!(r#"{{"model":"{}","prompt":"Once upon a time","stream":true,"logit_bias":{{"2":-100}}}}"#, smol_id())
}

/// A two-token completion.
fn short() -> String {
    format!(r#"{{"model":"{}","prompt":"Hi","max_tokens":2}}"#, smol_id())
}

/// The command line of process `pid`, split at its NULs.
fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
}

#[test]
fn a_huge_penalty_window_is_bounded_by_the_context() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--ctx", "512", "--parallel", "2"]);
    let plain = format!(r#"{{"model":"{}","prompt":"Once upon a time","max_tokens":8}}"#, smol_id());
    assert_eq!(s.post("/v1/completions", &plain).unwrap().0, 200);
    let pid = s.worker_pid(&smol_id()).unwrap();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    let before = rss();
    let bomb = format!(
        r#"{{"model":"{}","prompt":"Once upon a time","max_tokens":8,"repeat_last_n":2147483647,"presence_penalty":0.5}}"#,
        smol_id()
    );
    let started = Instant::now();
    let (status, body) = s.post("/v1/completions", &bomb).unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    // Unbounded, the window allocated gigabytes and took 20 s and more.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(rss() < before + (256 << 20), "the worker grew from {before} to {} bytes", rss());
}

#[test]
fn the_router_serves_as_pid_1_and_its_workers_still_die_with_it() {
    let dir = smol_bucket();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kv = tempfile::tempdir().unwrap();
    // A new PID namespace, as a container's entrypoint gets: the router is PID 1 in it. With
    // its own /proc where the root is a mount point; a chroot's root is not, and there the
    // namespace keeps the outer /proc (the router is PID 1 all the same).
    let mut ns = vec!["--pid", "--fork", "--kill-child"];
    let own_proc = Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).status();
    if own_proc.is_ok_and(|s| s.success()) {
        ns.push("--mount-proc");
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut router = Command::new("unshare")
        .args(&ns)
        .arg(bin("model-bucket"))
        .args(["serve", "--port", &port.to_string(), "--threads", "1", "--models-dir"])
        .arg(dir.path())
        .env("EDEN_KV_CACHE_DIR", kv.path())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("unshare (util-linux) must be installed and allowed to create a PID namespace");
    let up = eventually(Duration::from_secs(30), || server::get(port, "/health").is_ok_and(|r| r.0 == 200));
    assert!(up, "{:?}: {}", ns, std::fs::read_to_string(log.path()).unwrap_or_default());
    let body = format!(r#"{{"model":"{}","prompt":"The capital of France is","max_tokens":4}}"#, smol_id());
    let (status, resp) =
        server::read_response(server::open(port, "POST", "/v1/completions", "", &body, None).unwrap()).unwrap();
    assert_eq!(status, 200, "the worker serves under a PID-1 router: {resp}");
    // The worker, seen from outside the namespace.
    let worker = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| {
            cmdline(p).iter().any(|a| a.ends_with("model-bucket-worker"))
                && cmdline(p).iter().any(|a| a.starts_with(dir.path().to_str().unwrap()))
        })
        .expect("the worker process");
    router.kill().unwrap();
    router.wait().unwrap();
    assert!(eventually(Duration::from_secs(10), || !server::alive(worker)), "the worker outlived its router");
}

#[test]
fn the_worker_socket_is_private_and_takes_only_the_worker() {
    let dir = smol_bucket();
    let fake = bin("fake-worker");
    let s = Server::start_with_env(
        dir.path(),
        &["--load-wait", "30"],
        &[
            ("EDEN_WORKER_BIN", fake.to_str().unwrap()),
            ("EDEN_FAKE_MODE", "slow-connect:1500"),
            ("HF_TOKEN", "hf-secret"),
            ("EDEN_UPSTREAM_KEY", "sk-upstream"),
            // What `peer_api_key_env` or `upstream.api_key_env` may name: any name at all.
            ("PEER_SHARED", "peer-secret"),
        ],
    );
    let port = s.port;
    let body = format!(r#"{{"model":"{}","prompt":"Hi","max_tokens":3}}"#, smol_id());
    let request = std::thread::spawn(move || {
        server::read_response(server::open(port, "POST", "/v1/completions", "", &body, None).unwrap()).unwrap()
    });
    // Find the fake worker (still asleep) and its socket, and get there first.
    let model_dir = dir.path().to_str().unwrap().to_string();
    let mut found: Option<(u32, PathBuf)> = None;
    assert!(eventually(Duration::from_secs(10), || {
        found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let args = cmdline(pid);
            let ours =
                args.iter().any(|a| a.ends_with("fake-worker")) && args.iter().any(|a| a.starts_with(&model_dir));
            ours.then(|| arg_after(&args, "--socket").map(|p| (pid, PathBuf::from(p))))?
        });
        found.is_some()
    }));
    let (pid, socket) = found.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket.parent().unwrap()), 0o700, "the socket's folder");
    assert_eq!(mode(&socket), 0o600, "the socket");
    let intruder = std::os::unix::net::UnixStream::connect(&socket).expect("connect before the worker");
    let (status, resp) = request.join().unwrap();
    assert_eq!(status, 200, "the real worker was served: {resp}");
    assert!(s.log().contains("dropped a connection to a worker socket from another process"), "{}", s.log());
    drop(intruder);
    // No secret reached the worker's environment.
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(!env.contains("hf-secret") && !env.contains("sk-upstream") && !env.contains("peer-secret"), "{env}");
    // What the worker needs is there.
    assert!(env.contains("PATH=") && env.contains("EDEN_FAKE_MODE="), "{env}");
}

#[test]
fn a_request_cut_off_by_an_unload_ends_in_an_error_not_a_finish() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--shutdown-grace", "1"]);
    let body = endless();
    let mut lines = sse_lines(s.port, "/v1/completions", &body, Duration::from_secs(60));
    // It is generating: unload its model, which drains for at most the grace.
    let first = lines.by_ref().find(|l| l.contains("\"text\"")).expect("a first token");
    assert!(first.contains("\"finish_reason\":null"), "{first}");
    let unload = s.post(&format!("/admin/models/{}/unload", smol_id()), "").unwrap();
    assert_eq!(unload.0, 200, "{unload:?}");
    let rest: Vec<String> = lines.collect();
    assert!(rest.iter().all(|l| !l.contains("\"finish_reason\":\"stop\"")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"error\"") && l.contains("stopped")), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn a_model_with_a_full_queue_answers_429_with_retry_after() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--parallel", "1", "--max-queue", "1"]);
    let endless = endless();
    // The only slot is busy for as long as this stream is read.
    let mut busy = sse_lines(s.port, "/v1/completions", &endless, Duration::from_secs(60));
    busy.by_ref().find(|l| l.contains("\"text\"")).expect("a first token");
    let short = short();
    let port = s.port;
    let body = short.clone();
    let waiting = std::thread::spawn(move || {
        server::read_response(server::open(port, "POST", "/v1/completions", "", &body, None).unwrap()).unwrap()
    });
    // Once one request waits, the next is refused at once.
    let queued = || s.get_json("/admin/workers")["workers"][0]["queued"].as_u64() == Some(1);
    assert!(eventually(Duration::from_secs(10), queued), "{}", s.get_json("/admin/workers"));
    std::thread::sleep(Duration::from_millis(200));
    let refused = s.post("/v1/completions", &short).unwrap();
    assert_eq!(refused.0, 429, "{refused:?}");
    let lower = refused.1.to_ascii_lowercase();
    // No request has ended yet, so nothing says how long one takes: a second.
    assert!(lower.contains("retry-after: 1") && lower.contains("queue_full"), "{}", refused.1);
    // The client of the stream leaves: the waiting request gets the slot.
    drop(busy);
    let (status, resp) = waiting.join().unwrap();
    assert_eq!(status, 200, "{resp}");
}

#[test]
fn idle_and_trickling_sockets_neither_pile_up_nor_block_a_request() {
    use std::io::{Read, Write};
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--header-timeout", "2", "--max-connections", "32"]);
    // More silent sockets than the server takes connections at once.
    let mut idle: Vec<std::net::TcpStream> =
        (0..40).map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap()).collect();
    // One sends half a request and then nothing; one finishes a request and stays open.
    let mut trickle = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    trickle.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    // Every place is taken: a request on one of the reserve connections (kept for /health and
    // /metrics) is told to retry; once the silent sockets are closed it is served.
    let body = short();
    let (status, resp) = s.post("/v1/completions", &body).unwrap();
    assert!(status == 200 || (status == 503 && resp.contains("--max-connections")), "{status} {resp}");
    let (status, resp) = s.get("/health").unwrap();
    assert_eq!(status, 200, "health on a reserve connection: {resp}");
    assert!(eventually(Duration::from_secs(10), || s.post("/v1/completions", &body).unwrap().0 == 200));
    // Past the timeout the server has closed each of them: a read sees the end (or a 408).
    let closed = |c: &mut std::net::TcpStream, what: &str| {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{what} was not closed: {e}; got {:?}", String::from_utf8_lossy(&all)),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    closed(&mut idle[0], "a silent socket");
    let t = closed(&mut trickle, "a trickling socket");
    assert!(t.is_empty() || t.starts_with("HTTP/1.1 408"), "{t}");
    let k = closed(&mut kept, "an idle keep-alive socket");
    assert!(k.starts_with("HTTP/1.1 200"), "{k}");
    idle.clear();
}

#[test]
fn signals_are_handled_from_the_start_and_a_second_stop_is_immediate() {
    let dir = smol_bucket();
    // A SIGHUP while the first scan is still hashing the model file must not end the process.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kv = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(bin("model-bucket"))
        .args(["serve", "--port", &port.to_string(), "--threads", "1", "--shutdown-grace", "30", "--models-dir"])
        .arg(dir.path())
        .env("EDEN_KV_CACHE_DIR", kv.path())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let scanning = || std::fs::read_to_string(log.path()).unwrap_or_default().contains("scanning the models folder");
    assert!(eventually(Duration::from_secs(10), scanning));
    server::signal(child.id(), "HUP");
    assert!(
        eventually(Duration::from_secs(30), || server::get(port, "/health").is_ok_and(|r| r.0 == 200)),
        "the server died of an early SIGHUP"
    );
    // A stream keeps the first SIGTERM waiting (a 30 s grace); a second one ends it at once.
    let body = endless();
    let mut stream = sse_lines(port, "/v1/completions", &body, Duration::from_secs(60));
    stream.by_ref().find(|l| l.contains("\"text\"")).expect("a first token");
    server::signal(child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the first SIGTERM waits for the stream");
    let sent = Instant::now();
    server::signal(child.id(), "TERM");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "a second SIGTERM did not stop the server");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
}

#[test]
fn one_client_cannot_take_more_than_its_share() {
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--parallel", "2", "--max-client-requests", "1"]);
    let endless = endless();
    let short = short();
    let as_client = |key: &str, body: &str| {
        server::read_response(
            server::open(s.port, "POST", "/v1/completions", &format!("Authorization: Bearer {key}\r\n"), body, None)
                .unwrap(),
        )
        .unwrap()
    };
    let c = server::open(
        s.port,
        "POST",
        "/v1/completions",
        "Authorization: Bearer client-a\r\n",
        &endless,
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    let mut busy = std::io::BufRead::lines(std::io::BufReader::new(c)).map_while(Result::ok);
    busy.by_ref().find(|l| l.contains("\"text\"")).expect("a first token");
    // Without an API key a client is its address, and all of these come from 127.0.0.1.
    let (status, resp) = as_client("client-b", &short);
    assert_eq!(status, 429, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("retry-after"), "{resp}");
    // The stream ends: client A has its place back.
    drop(busy);
    assert!(eventually(Duration::from_secs(10), || as_client("client-a", &short).0 == 200));
}

#[test]
fn watch_streams_cannot_take_every_connection_and_health_always_answers() {
    use std::io::{Read, Write};
    let dir = smol_bucket();
    let s = Server::start(dir.path(), &["--max-connections", "40"]);
    // Opens an event stream; the connection and its status.
    let watch = || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"GET /admin/events HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        let status: u16 = match c.read_exact(&mut head) {
            Ok(()) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
            Err(_) => 0,
        };
        (c, status)
    };
    // One client opens 40 event streams: the connection limit's worth.
    let mut streams: Vec<_> = (0..40).map(|_| watch()).collect();
    let statuses: Vec<u16> = streams.iter().map(|(_, st)| *st).collect();
    assert_eq!(statuses.iter().filter(|&&st| st == 200).count(), 8, "{statuses:?}");
    assert!(statuses.iter().all(|&st| st == 200 || st == 429), "{statuses:?}");
    // Health and metrics answer however many connections are held.
    assert_eq!(s.get("/health").unwrap().0, 200);
    assert_eq!(s.get("/metrics").unwrap().0, 200);
    // Closed streams give their places back.
    streams.clear();
    assert!(eventually(Duration::from_secs(10), || watch().1 == 200));
}

/// The inode of `p`.
fn ino(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

/// Writes `bytes` at `offset` of `p` and sets its modification time back to what it was.
fn rewrite_keeping_mtime(p: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, Write};
    let mtime = std::fs::metadata(p).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.seek(std::io::SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.set_modified(mtime).unwrap();
}

#[test]
fn a_file_added_by_path_cannot_be_changed_behind_its_id() {
    use std::os::unix::fs::PermissionsExt;
    let bucket = tempfile::tempdir().unwrap();
    let s = Server::start(bucket.path(), &[]);
    let outside = tempfile::tempdir().unwrap();
    let add = |p: &std::path::Path| {
        let (status, resp) = s.post("/admin/models", &serde_json::json!({ "path": p }).to_string()).unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    };
    // A model anybody may write: copied into the folder, never linked.
    let src = outside.path().join("smol.gguf");
    std::fs::copy(model(SMOLLM2_FILE), &src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (status, body) = add(&src);
    assert_eq!(status, 200, "{body}");
    let placed = bucket.path().join("smol.gguf");
    assert_ne!(ino(&placed), ino(&src), "a file others may write was linked");
    // Whoever may write the source changes it and sets its time back: the bucket's copy is not it.
    let size = std::fs::metadata(&src).unwrap().len();
    rewrite_keeping_mtime(&src, size - 4096, &[0x5a; 1024]);
    assert_eq!(s.post("/admin/rescan", "").unwrap().0, 200);
    assert!(listed_ids(&s).contains(&smol_id()));
    // The bucket's own file rewritten with its size and time kept is hashed again: another ID.
    // (A file changed moments ago settles before it is hashed: rescans until it is listed.)
    rewrite_keeping_mtime(&placed, size - 4096, &[0xa5; 1024]);
    let rehashed = || {
        assert_eq!(s.post("/admin/rescan", "").unwrap().0, 200);
        let ids = listed_ids(&s);
        !ids.contains(&smol_id()) && ids.iter().any(|id| id.starts_with("eden_smollm2"))
    };
    assert!(eventually(Duration::from_secs(20), rehashed), "{:?}", listed_ids(&s));

    // A 2 GiB sparse file with nothing but a GGUF header: refused, and nothing of it is left
    // (it was copied as holes, not written out).
    let sparse = outside.path().join("sparse.gguf");
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes());
    header.extend([0u8; 16]);
    std::fs::write(&sparse, &header).unwrap();
    std::fs::OpenOptions::new().write(true).open(&sparse).unwrap().set_len(2 << 30).unwrap();
    std::fs::set_permissions(&sparse, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (status, body) = add(&sparse);
    assert_eq!(status, 400, "{body}");
    let left: Vec<_> = std::fs::read_dir(bucket.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().contains("sparse")), "{left:?}");

    // A readable file that is not a model: refused without quoting a byte of it.
    let secret = outside.path().join("secret.gguf");
    std::fs::write(&secret, "SECRET-TOKEN=hunter2").unwrap();
    let (status, body) = add(&secret);
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("SECR") && !body.contains("83, 69") && !body.contains("53, 45"), "{body}");
    // A link to a model and a FIFO: refused at once.
    let link = outside.path().join("link.gguf");
    std::os::unix::fs::symlink(model(SMOLLM2_FILE), &link).unwrap();
    let (status, body) = add(&link);
    assert!(status == 400 && body.contains("symbolic link"), "{status} {body}");
    let fifo = outside.path().join("fifo.gguf");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (status, body) = add(&fifo);
    assert!(status == 400 && body.contains("not a regular file"), "{status} {body}");
}

/// The IDs `/v1/models` lists.
fn listed_ids(s: &Server) -> Vec<String> {
    s.get_json("/v1/models")["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str().map(String::from))
        .collect()
}
