//! A server's workers seen from outside, in `/proc`: not the server's own report of them.
//! A worker is a live (not zombie) child process of the server with a `.gguf` path on its
//! command line (its model; a child caught between fork and exec still has the server's command
//! line, and holds a few KiB); its resident memory is its `VmRSS` (anonymous and file pages, as
//! the RAM budget counts them).

use std::collections::BTreeMap;

/// One worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub pid: u32,
    /// The model file the worker serves (its file name).
    pub model: String,
    pub rss: u64,
}

/// The live children of `server`, each with its resident memory.
pub fn workers(server: u32) -> Vec<Worker> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| live_child_of(&s)) == Some(server)
        })
        .filter_map(|pid| {
            let rss = model_bucket_shared::mem::rss_bytes(Some(pid))?;
            let model = model_of(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)?;
            Some(Worker { pid, model, rss })
        })
        .collect()
}

/// The parent pid in a `/proc/PID/stat` line, unless the process is a zombie (it holds no
/// memory, and its parent has not yet reaped it).
pub fn live_child_of(stat: &str) -> Option<u32> {
    // The command name is in parentheses and may hold spaces or parentheses: fields follow the
    // last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    (state != "Z" && state != "X").then_some(ppid)
}

/// The file name of the first `.gguf` argument of a NUL-separated command line.
pub fn model_of(cmdline: &[u8]) -> Option<String> {
    cmdline
        .split(|b| *b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .find(|a| a.ends_with(".gguf"))
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
}

/// What the sampler saw over a run.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The largest sum of the workers' resident memory in one sample.
    pub max_total: u64,
    /// The most workers alive in one sample.
    pub max_alive: usize,
    /// Each model's largest worker resident memory.
    pub max_by_model: BTreeMap<String, u64>,
    pub samples: u64,
}

impl Seen {
    pub fn add(&mut self, ws: &[Worker]) {
        self.samples += 1;
        self.max_total = self.max_total.max(ws.iter().map(|w| w.rss).sum());
        self.max_alive = self.max_alive.max(ws.len());
        for w in ws {
            let m = self.max_by_model.entry(w.model.clone()).or_default();
            *m = (*m).max(w.rss);
        }
    }

    /// The models' largest resident memories added up: what holding all of them at once
    /// would take.
    pub fn all_at_once(&self) -> u64 {
        self.max_by_model.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(live_child_of("123 (model-bucket-wo) S 77 123 77 0 -1"), Some(77));
        assert_eq!(live_child_of("123 (odd) name)) R 5 1"), Some(5));
        assert_eq!(live_child_of("123 (gone) Z 77 123"), None);
    }

    #[test]
    fn command_lines() {
        assert_eq!(model_of(b"/x/worker\0--model\0/m/a b.gguf\0--ctx\x00512\0").as_deref(), Some("a b.gguf"));
        assert_eq!(model_of(b"/x/model-bucket\0serve\0--ctx\x00512"), None);
    }

    #[test]
    fn what_was_seen() {
        let w = |pid, model: &str, rss| Worker { pid, model: model.into(), rss };
        let mut s = Seen::default();
        s.add(&[w(1, "a", 10)]);
        s.add(&[w(2, "b", 30), w(1, "a", 12)]);
        s.add(&[]);
        assert_eq!((s.max_total, s.max_alive, s.all_at_once(), s.samples), (42, 2, 42, 3));
    }

    #[test]
    fn a_child_with_a_model_on_its_command_line_is_seen_with_its_memory() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("m.gguf");
        // The model's path as the process's name (argv[0]), on its command line.
        let mut child = std::process::Command::new("sleep").arg0(&fake).arg("30").spawn().unwrap();
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let found = (0..100).find_map(|_| {
            let ws = workers(std::process::id());
            std::thread::sleep(std::time::Duration::from_millis(20));
            ws.into_iter().find(|w| w.pid == child.id())
        });
        let ws = workers(std::process::id());
        let _ = (child.kill(), other.kill(), child.wait(), other.wait());
        let w = found.expect("the child is seen");
        assert!(w.model == "m.gguf" && w.rss > 0, "{w:?}");
        assert!(ws.iter().all(|w| w.pid != other.id()), "a child without a model is not a worker: {ws:?}");
    }
}
