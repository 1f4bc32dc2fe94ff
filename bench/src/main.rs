//! `model-bucket-bench`: Model Bucket side by side with llama.cpp's own llama-server b11434 on
//! the default models, same threads, slots and context, same run, alternating; writes each
//! section of `docs/BENCHMARKS.md` with its raw figures (`docs/bench/*.json`, `sections.rs`),
//! and the plots; `--readme` writes the README's table from those figures.
//!
//! ```sh
//! cargo run --release -p model-bucket-bench -- [--llama-server PATH] [--threads 2] [--slots 16] [--rounds 3] [--out docs] [--only-cache] [--only-agent] [--only-lora] [--only-fleet] [--readme | --readme-check] [--only-day] [--day-seconds 150] [--day-variant FLAGS]... [--day-no-anchor] [--day-synthetic A,B] [--only-switch] [--switch-size GB]... [--only-dialects] [--only-spec] [--llama-server-arg ARG]...
//! ```
//! Without `--llama-server` (or `$LLAMA_SERVER`) it builds llama-server once into
//! `~/.cache/model-bucket`. Run `scripts/setup` first (binaries and models).

mod agent;
mod cache;
mod client;
mod day;
mod dialects;
mod fleet;
mod llama;
mod lora;
mod plot;
mod readme;
mod report;
mod sections;
mod spec;
mod switch;
mod workloads;

use anyhow::Result;
use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    pub llama_server: Option<PathBuf>,
    pub threads: u32,
    pub slots: u32,
    /// Context per slot, in tokens (room for the ~1,000-token prompt).
    pub ctx: u32,
    pub rounds: usize,
    pub out: PathBuf,
    /// Run only the prompt-cache workloads and write their section (`sections.rs`).
    pub only_cache: bool,
    /// Run only the agent-API workloads and write their section (`sections.rs`).
    pub only_agent: bool,
    /// Run only the LoRA workloads and write their section (`sections.rs`).
    pub only_lora: bool,
    /// Run only the peer workloads and write their section (`sections.rs`).
    pub only_fleet: bool,
    /// Run only the daemon day, print its section and write its raw records to `OUT/day.json`.
    pub only_day: bool,
    /// Seconds each server runs the daemon day.
    pub day_seconds: u64,
    /// Model Bucket's runs of the daemon day, each its extra flags (`--day-variant`,
    /// repeatable; default `--sched turns` and `--sched fifo`).
    pub day_variants: Vec<String>,
    /// Leave llama-server out of the daemon day (`--day-no-anchor`), to compare settings.
    pub day_no_anchor: bool,
    /// Run the daemon day on two synthetic models instead (`--day-synthetic 1.5,4`): the
    /// chat tasks on the first, the others on the second.
    pub day_synthetic: Option<(String, String)>,
    /// Run only the switch to models of real sizes, print its section and write its raw
    /// measurements to `OUT/switch.json`.
    pub only_switch: bool,
    /// Only the dialects' translation cost and stored conversations (`dialects.rs`).
    pub only_dialects: bool,
    /// Only speculation against llama-server's n-gram types (`spec.rs`): writes
    /// `OUT/SPECULATION.md` and `OUT/spec.json`.
    pub only_spec: bool,
    /// The synthetic sizes to switch to (`--switch-size`, repeatable: 0.5, 1.5 or 4; default
    /// all three).
    pub switch_sizes: Vec<String>,
    /// `--readme`: rewrite the README's benchmark table from `OUT/bench/*.json`;
    /// `--readme-check`: fail if it differs from what they give.
    pub readme: Option<readme::Mode>,
    /// Extra llama-server arguments for the LoRA workloads (`--llama-server-arg`, repeatable),
    /// for a machine where one of its defaults cannot run; the report names them.
    pub ls_extra: Vec<String>,
}

fn main() -> Result<()> {
    let mut o = Opts {
        llama_server: None,
        threads: 2,
        slots: 16,
        ctx: 2048,
        rounds: 3,
        only_cache: false,
        only_agent: false,
        only_lora: false,
        only_fleet: false,
        only_day: false,
        day_seconds: 150,
        day_variants: Vec::new(),
        day_no_anchor: false,
        day_synthetic: None,
        only_switch: false,
        only_dialects: false,
        only_spec: false,
        switch_sizes: Vec::new(),
        ls_extra: Vec::new(),
        readme: None,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--llama-server" => o.llama_server = Some(val()?.into()),
            "--threads" => o.threads = val()?.parse()?,
            "--slots" => o.slots = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--out" => o.out = val()?.into(),
            "--only-cache" => o.only_cache = true,
            "--only-agent" => o.only_agent = true,
            "--only-lora" => o.only_lora = true,
            "--only-fleet" => o.only_fleet = true,
            "--only-day" => o.only_day = true,
            "--day-seconds" => o.day_seconds = val()?.parse()?,
            "--day-variant" => o.day_variants.push(val()?),
            "--day-no-anchor" => o.day_no_anchor = true,
            "--day-synthetic" => {
                let v = val()?;
                let (a, b) =
                    anyhow::Context::context(v.split_once(','), "--day-synthetic A,B (sizes in GB: 0.5, 1.5 or 4)")?;
                o.day_synthetic = Some((a.to_string(), b.to_string()));
            }
            "--only-switch" => o.only_switch = true,
            "--only-dialects" => o.only_dialects = true,
            "--only-spec" => o.only_spec = true,
            "--switch-size" => o.switch_sizes.push(val()?),
            "--llama-server-arg" => o.ls_extra.push(val()?),
            "--readme" => o.readme = Some(readme::Mode::Write),
            "--readme-check" => o.readme = Some(readme::Mode::Check),
            "-h" | "--help" => {
                println!("model-bucket-bench [--llama-server PATH] [--threads N] [--slots N] [--rounds N] [--out DIR] [--only-cache] [--only-agent] [--only-lora] [--only-fleet] [--only-day] [--day-seconds N] [--day-variant FLAGS]... [--day-no-anchor] [--day-synthetic A,B] [--only-switch] [--switch-size GB]... [--only-dialects] [--only-spec] [--llama-server-arg ARG]... [--readme | --readme-check]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    // The commit is read before this run writes anything.
    report::commit();
    if o.readme.is_some() {
        return readme::run(&o);
    }
    if o.only_fleet {
        let r = fleet::run(&o)?;
        let md = fleet::markdown(&o, &r);
        sections::write(&o.out, "fleet", &md, &r)?;
        println!("{md}");
        return Ok(());
    }
    if o.only_dialects {
        let r = dialects::run(&o)?;
        // The report names the commit: made before the run's own files change the tree.
        let md = dialects::markdown(&o, &r);
        std::fs::create_dir_all(&o.out)?;
        std::fs::write(o.out.join("dialects.json"), serde_json::to_string_pretty(&dialects::raw(&r))?)?;
        std::fs::write(o.out.join("DIALECTS.md"), &md)?;
        println!("{md}");
        eprintln!("bench: wrote {}", o.out.join("DIALECTS.md").display());
        return Ok(());
    }
    let ls = llama::find_or_build(o.llama_server.clone())?;
    if o.only_spec {
        let r = spec::run(&o, &ls)?;
        std::fs::create_dir_all(&o.out)?;
        std::fs::write(o.out.join("spec.json"), serde_json::to_string_pretty(&r)?)?;
        std::fs::write(o.out.join("SPECULATION.md"), spec::markdown(&r))?;
        println!("{}", spec::markdown(&r));
        eprintln!("bench: wrote {}", o.out.join("SPECULATION.md").display());
        return Ok(());
    }
    if o.only_day {
        let r = day::run(&o, &ls)?;
        std::fs::create_dir_all(&o.out)?;
        let file = if o.day_synthetic.is_some() { "day-synthetic.json" } else { "day.json" };
        std::fs::write(o.out.join(file), serde_json::to_string_pretty(&day::raw(&r))?)?;
        println!("{}", day::markdown(&o, &r));
        eprintln!("bench: wrote {}", o.out.join(file).display());
        return Ok(());
    }
    if o.only_switch {
        let r = switch::run(&o, &ls)?;
        std::fs::create_dir_all(&o.out)?;
        std::fs::write(o.out.join("switch.json"), serde_json::to_string_pretty(&switch::raw(&r))?)?;
        println!("{}", switch::markdown(&o, &r));
        eprintln!("bench: wrote {}", o.out.join("switch.json").display());
        return Ok(());
    }
    // Each section is written as soon as it has run (its markdown is made first, so that it
    // names the commit before the run's own files change the tree).
    let all = !(o.only_cache || o.only_agent || o.only_lora);
    if all {
        let results = workloads::run(&o, &ls)?;
        let md = report::markdown(&o, &ls, &results);
        std::fs::create_dir_all(&o.out)?;
        plot::throughput(&results, &o.out.join("throughput.png"))?;
        plot::latency(&results, &o.out.join("latency.png"))?;
        sections::write(&o.out, "throughput", &md, &results)?;
    }
    if all || o.only_cache {
        let r = cache::run(&o, &ls)?;
        sections::write(&o.out, "cache", &cache::markdown(&r), &r)?;
    }
    if all || o.only_agent {
        let r = agent::run(&o, &ls)?;
        sections::write(&o.out, "agent", &agent::markdown(&r), &r)?;
    }
    if all || o.only_lora {
        let r = lora::run(&o, &ls)?;
        sections::write(&o.out, "lora", &lora::markdown(&o, &r), &r)?;
    }
    if all {
        let r = fleet::run(&o)?;
        sections::write(&o.out, "fleet", &fleet::markdown(&o, &r), &r)?;
    }
    println!("{}", sections::assemble(&o.out));
    Ok(())
}
