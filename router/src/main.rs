//! `model-bucket`: the catalog commands and (with the router) the OpenAI-compatible server.

use clap::Parser;
use model_bucket::cli::{Cli, Command};
use model_bucket::{catalog_cmd, ctl_cmd, generate_cmd, pull_cmd, serve};

fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or the journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_level())),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { serve, bucket } => serve::run(&bucket, serve),
        Command::List { json, all, bucket } => catalog_cmd::list(&bucket, json, all),
        Command::Info { id, json, bucket } => catalog_cmd::info(&bucket, &id, json),
        Command::Generate { id, prompt, max_tokens, temperature, seed, raw, ctx, threads, stats, bucket } => {
            generate_cmd::run(
                &bucket,
                generate_cmd::GenerateArgs { id, prompt, max_tokens, temperature, seed, raw, ctx, threads, stats },
            )
        }
        Command::Ps { json, server } => ctl_cmd::ps(&server, json),
        Command::Load { id, server } => ctl_cmd::load(&server, &id),
        Command::Unload { id, server } => ctl_cmd::unload(&server, &id),
        Command::Pull { name, file, revision, yes, json, bucket } => {
            pull_cmd::pull(&bucket, &name, file.as_deref(), &revision, yes, json)
        }
        Command::Recommend => pull_cmd::recommend(),
        Command::Add { path, custom_id, json, bucket } => catalog_cmd::add(&bucket, &path, custom_id.as_deref(), json),
    }
}

/// `serve` reports what it does; the one-shot commands only warn.
fn default_log_level() -> &'static str {
    match std::env::args().nth(1).as_deref() {
        Some("serve") => "info",
        _ => "warn",
    }
}
