//! Peers: what forwarding costs and what spreading gains. Node A has no model and knows two
//! peers, B and C, each with SmolLM2 on one thread; a request to A goes to the least busy of
//! them. Measured: a whole 1-token request at B directly and through A (median and p99), one
//! stream's decode rate both ways, and the aggregate rate of many streams sent to A against the
//! same streams sent to one node with SmolLM2 on two threads (the same cores in all).
//! llama-server has no peers: this compares Model Bucket with itself.

use anyhow::Result;
use model_bucket_tests::*;
use std::time::Duration;

use crate::client::{Dialect, Target};
use crate::workloads::{median, pct};
use crate::Opts;

/// SmolLM2's end of sequence, banned.
const EOS: i32 = 2;
/// Whole 1-token requests each way.
const ONE_TOKEN: usize = 200;
/// Tokens per stream.
const TOKENS: u32 = 128;
/// Concurrent streams for the aggregate rate.
const STREAMS: usize = 8;

#[derive(Debug, Default, serde::Serialize)]
pub struct FleetResults {
    /// 1-token request times, ms: (at B, through A).
    pub one_token: (Vec<f64>, Vec<f64>),
    /// One stream's decode rate, tokens/s: (at B, through A).
    pub decode: (Vec<f64>, Vec<f64>),
    /// Aggregate tokens/s of [`STREAMS`] streams: (through A to B and C, one node).
    pub aggregate: (Vec<f64>, Vec<f64>),
}

/// A folder with SmolLM2.
fn smol_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp folder");
    link_model(SMOLLM2_FILE, dir.path(), SMOLLM2_FILE);
    dir
}

fn target(s: &Server) -> Target {
    Target { port: s.port, dialect: Dialect::ModelBucket, model: Some(smol_id()), eos: EOS }
}

pub fn run(o: &Opts) -> Result<FleetResults> {
    let (b_dir, c_dir, a_dir, one_dir) = (smol_folder(), smol_folder(), tempfile::tempdir()?, smol_folder());
    let slots = STREAMS.to_string();
    let peer_flags =
        |threads: &str| vec!["--threads".to_string(), threads.to_string(), "--parallel".into(), slots.clone()];
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let bc_flags = peer_flags("1");
    let b = Server::start(b_dir.path(), &args(&bc_flags));
    let c = Server::start(c_dir.path(), &args(&bc_flags));
    let mut a_flags = vec!["--peer-poll-ms".to_string(), "500".into()];
    for s in [&b, &c] {
        a_flags.extend(["--peer".to_string(), s.base_url()]);
    }
    let a = Server::start(a_dir.path(), &args(&a_flags));
    let one = Server::start(one_dir.path(), &args(&peer_flags(&o.threads.to_string())));
    let (ta, tb, tone) = (target(&a), target(&b), target(&one));
    // A has learnt its peers' models; every node has its model loaded.
    anyhow::ensure!(
        server::eventually(Duration::from_secs(30), || tb.one_token("warm").is_ok() && ta.one_token("warm").is_ok()),
        "A does not forward to its peers"
    );
    tone.one_token("warm")?;
    let mut r = FleetResults::default();
    eprintln!("bench: peers, 1-token requests");
    for i in 0..ONE_TOKEN {
        let p = format!("Request {i}: hello");
        r.one_token.0.push(tb.one_token(&p)?.as_secs_f64() * 1000.0);
        r.one_token.1.push(ta.one_token(&p)?.as_secs_f64() * 1000.0);
    }
    eprintln!("bench: peers, decode and aggregate rates");
    let prompt = "Write a long story about a lighthouse keeper.";
    for _ in 0..o.rounds.max(3) {
        r.decode.0.push(tb.throughput(prompt, 1, TOKENS)?);
        r.decode.1.push(ta.throughput(prompt, 1, TOKENS)?);
        r.aggregate.0.push(ta.throughput(prompt, STREAMS, TOKENS)?);
        r.aggregate.1.push(tone.throughput(prompt, STREAMS, TOKENS)?);
    }
    Ok(r)
}

/// The report's section.
pub fn markdown(o: &Opts, r: &FleetResults) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "## Peers\n");
    let _ = writeln!(s, "{}\n", crate::sections::stamp());
    let _ = writeln!(
        s,
        "Node A has no model and two peers, B and C, each with SmolLM2 on one thread and {STREAMS} slots; the single node has SmolLM2 on {} threads and {STREAMS} slots. All on this machine's loopback, so the fleet has no more cores than the single node. Model Bucket against itself: llama-server has no peers.\n",
        o.threads
    );
    let _ = writeln!(s, "| | directly at B | through A | cost |\n|---|---|---|---|");
    let (d, f) = (&r.one_token.0, &r.one_token.1);
    let _ = writeln!(
        s,
        "| 1-token request, median ({ONE_TOKEN} each) | {:.2} ms | {:.2} ms | +{:.2} ms |",
        median(d),
        median(f),
        median(f) - median(d)
    );
    let _ = writeln!(
        s,
        "| 1-token request, p99 | {:.2} ms | {:.2} ms | +{:.2} ms |",
        pct(d, 99.0),
        pct(f, 99.0),
        pct(f, 99.0) - pct(d, 99.0)
    );
    let (d, f) = (median(&r.decode.0), median(&r.decode.1));
    let _ =
        writeln!(s, "| decode, one stream of {TOKENS} tokens | {d:.1} tokens/s | {f:.1} tokens/s | {:.2}× |\n", f / d);
    let (fleet, one) = (median(&r.aggregate.0), median(&r.aggregate.1));
    let _ = writeln!(
        s,
        "{STREAMS} streams of {TOKENS} tokens: {fleet:.1} tokens/s sent to A and spread over B and C, {one:.1} tokens/s at the single node ({:.2}×).",
        fleet / one
    );
    s
}
