//! `model-bucket-worker`: one process per loaded model.
//!
//! Order of events: pin to `--cpus` (before llama.cpp starts threads), connect to the router's
//! socket, handshake, load the model, report `Ready`, then run the decode loop on this thread
//! while a reader and a writer thread move frames. The worker exits when the router says
//! Shutdown, when the socket closes, or when the router dies (`PR_SET_PDEATHSIG`).

mod args;
mod cache;
mod conn;
mod engine;
mod load;
mod mapped;

use clap::Parser;
use model_bucket_shared::protocol::{
    ErrorKind, FromWorker, EXIT_LOAD_FAILED, EXIT_PROTOCOL_MISMATCH, EXIT_SOCKET, PARENT_PID_ENV,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = args::Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    die_with_parent();
    if let Some(cpus) = &args.cpus {
        if let Err(e) = pin(cpus) {
            tracing::error!(error = %e, "cannot pin to cpus");
            return ExitCode::from(2);
        }
    }
    let stream = match connect(&args.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(socket = %args.socket.display(), error = %e, "cannot connect to the router");
            return ExitCode::from(EXIT_SOCKET as u8);
        }
    };
    let (reader, writer) = match conn::handshake(stream) {
        Ok(rw) => rw,
        Err(conn::HandshakeError::Mismatch(m)) => {
            tracing::error!(error = %m, "handshake failed");
            return ExitCode::from(EXIT_PROTOCOL_MISMATCH as u8);
        }
        Err(conn::HandshakeError::Frame(e)) => {
            tracing::error!(error = %e, "handshake failed");
            return ExitCode::from(EXIT_SOCKET as u8);
        }
    };
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
    let writer = conn::spawn_writer(writer, out_rx);
    // The engine's helper threads answer on the command channel too.
    let back = cmd_tx.clone();
    conn::spawn_reader(reader, cmd_tx);

    let code = match load::load_and_run(&args, out_tx.clone(), cmd_rx, back) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the model");
            let _ = out_tx.send(FromWorker::Error { id: None, kind: ErrorKind::Internal, message: e.to_string() });
            ExitCode::from(EXIT_LOAD_FAILED as u8)
        }
    };
    drop(out_tx);
    let _ = writer.join();
    code
}

/// Asks the kernel to kill this process when its parent dies, so no worker outlives a
/// SIGKILLed router.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        // The parent may have died before the call above: then this process has been handed to
        // another (PID 1 or a subreaper). The router says who it is; "parent is PID 1" alone
        // would be wrong where the router itself is PID 1 (a container's entrypoint).
        let expected = std::env::var(PARENT_PID_ENV).ok().and_then(|v| v.parse::<i32>().ok());
        if let Some(pid) = expected.map(nix::unistd::Pid::from_raw) {
            // A wrapper between the two (a script without `exec`) is fine while the router lives.
            let gone = nix::sys::signal::kill(pid, None).is_err();
            if nix::unistd::getppid() != pid && gone {
                std::process::exit(EXIT_SOCKET);
            }
        }
    }
}

fn pin(cpus: &str) -> Result<(), String> {
    let cores = model_bucket_shared::cpus::parse_cpu_list(cpus)?;
    let mut set = nix::sched::CpuSet::new();
    for c in &cores {
        set.set(*c).map_err(|e| format!("core {c}: {e}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity: {e}"))?;
    tracing::info!(?cores, "pinned");
    Ok(())
}

fn connect(path: &std::path::Path) -> std::io::Result<interprocess::local_socket::Stream> {
    use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
    let name = path.to_fs_name::<GenericFilePath>()?;
    Stream::connect(name)
}
