//! Which model serves a request: a model by name, or a task's ordered fallback chain. Pure
//! decisions; the completion handlers try the candidates in order.

use model_bucket_shared::config::UPSTREAM_PREFIX;
use model_bucket_shared::ModelId;
use std::collections::BTreeMap;

/// The prefix that names a task explicitly: `task:thinking`.
pub const TASK_PREFIX: &str = "task:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// A local model, by catalog ID.
    Local(ModelId),
    /// A model of the remote fallback.
    Upstream(String),
    /// A model this node lacks (or cannot serve now) that a peer has, by the chain's name.
    Peer(String),
}

/// The task `requested` names: `task:NAME` for a configured task, or a bare `NAME` that is a
/// task and not also a model (a model of that name wins).
pub fn task<'a, T>(requested: &'a str, tasks: &BTreeMap<String, T>, is_model: bool) -> Option<&'a str> {
    match requested.strip_prefix(TASK_PREFIX) {
        Some(name) => tasks.contains_key(name).then_some(name),
        None => (!is_model && tasks.contains_key(requested)).then_some(requested),
    }
}

/// A local model as the chain sees it.
pub struct LocalModel {
    pub id: ModelId,
    /// Failed, or unable to take this request (chat on a model without a template).
    pub unusable: bool,
}

/// The candidates of `chain`, in order: local entries that name a model that can serve, the
/// others when a peer can serve them (`on_peer`), and upstream entries. `resolve` looks a name
/// up in the catalog.
pub fn candidates(
    chain: &[String],
    resolve: impl Fn(&str) -> Option<LocalModel>,
    on_peer: impl Fn(&str) -> bool,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for entry in chain {
        let c = match entry.strip_prefix(UPSTREAM_PREFIX) {
            Some(model) => Candidate::Upstream(model.to_string()),
            None => match resolve(entry) {
                Some(m) if !m.unusable => Candidate::Local(m.id),
                _ if on_peer(entry) => Candidate::Peer(entry.clone()),
                _ => continue,
            },
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Which of `chain` serve now, without waiting for a load or for memory: local models whose
/// worker is ready (`ready`, by ID) and peers that have the model loaded (`on_peer`). The
/// upstream is not counted: a local model is worth waiting for rather than sending prompts
/// off the machine.
pub fn serving_now(chain: &[Candidate], ready: impl Fn(&str) -> bool, on_peer: impl Fn(&str) -> bool) -> Vec<bool> {
    chain
        .iter()
        .map(|c| match c {
            Candidate::Local(id) => ready(id.as_str()),
            Candidate::Peer(name) => on_peer(name),
            Candidate::Upstream(_) => false,
        })
        .collect()
}

/// The candidates of `chain` on the server as it is now: models in the catalog that have not
/// failed and, for a chat request (`chat`), have a chat template; then those of `peers`.
pub fn live_candidates(
    r: &crate::registry::Registry,
    chain: &[String],
    chat: bool,
    peers: Option<&crate::fleet::Fleet>,
) -> Vec<Candidate> {
    let cat = r.catalog();
    candidates(
        chain,
        |name| {
            cat.resolve(name).map(|m| LocalModel {
                id: m.id.clone(),
                unusable: matches!(r.state(m.worker_id()), crate::registry::State::Failed(_))
                    || (chat && !r.can_chat(m)),
            })
        },
        |name| peers.is_some_and(|f| f.serves(name, chat)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> BTreeMap<String, Vec<String>> {
        let mut t = BTreeMap::new();
        t.insert("thinking".to_string(), vec!["big".into(), "small".into(), "upstream:remote".into()]);
        t
    }

    #[test]
    fn task_names() {
        let t = tasks();
        assert_eq!(task("task:thinking", &t, false), Some("thinking"));
        assert_eq!(task("thinking", &t, false), Some("thinking"));
        assert_eq!(task("thinking", &t, true), None, "a model of the same name wins");
        assert_eq!(task("task:thinking", &t, true), Some("thinking"), "unless the prefix says task");
        assert_eq!(task("task:nope", &t, false), None);
        assert_eq!(task("small", &t, true), None);
    }

    #[test]
    fn chains_skip_missing_and_failed_models() {
        let chain = &tasks()["thinking"];
        let resolve = |name: &str| match name {
            "big" => None,
            "small" => Some(LocalModel { id: "eden_small_1b_abcdef".into(), unusable: false }),
            _ => None,
        };
        let nowhere = |_: &str| false;
        assert_eq!(
            candidates(chain, resolve, nowhere),
            vec![Candidate::Local("eden_small_1b_abcdef".into()), Candidate::Upstream("remote".into())]
        );
        let failed = |name: &str| Some(LocalModel { id: name.into(), unusable: name == "big" });
        assert_eq!(candidates(chain, failed, nowhere)[0], Candidate::Local("small".into()));
        assert_eq!(candidates(&["gone".to_string()], |_| None, nowhere), vec![]);
    }

    #[test]
    fn what_serves_now() {
        let chain = [
            Candidate::Local("big".into()),
            Candidate::Local("small".into()),
            Candidate::Peer("far".into()),
            Candidate::Upstream("remote".into()),
        ];
        let ready = |id: &str| id == "small";
        assert_eq!(serving_now(&chain, ready, |_| false), vec![false, true, false, false]);
        assert_eq!(serving_now(&chain[2..3], ready, |n| n == "far"), vec![true]);
    }

    #[test]
    fn a_model_only_a_peer_has_is_a_peer_candidate_in_its_place() {
        let chain = &tasks()["thinking"];
        let on_peer = |name: &str| name == "big";
        let failed = |name: &str| Some(LocalModel { id: name.into(), unusable: name == "big" });
        assert_eq!(
            candidates(chain, |_| None, on_peer),
            vec![Candidate::Peer("big".into()), Candidate::Upstream("remote".into())]
        );
        assert_eq!(candidates(chain, failed, on_peer)[0], Candidate::Peer("big".into()), "failed here, served there");
    }
}
