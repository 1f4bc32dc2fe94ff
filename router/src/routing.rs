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
}

/// The task `requested` names: `task:NAME` for a configured task, or a bare `NAME` that is a
/// task and not also a model (a model of that name wins).
pub fn task<'a>(requested: &'a str, tasks: &BTreeMap<String, Vec<String>>, is_model: bool) -> Option<&'a str> {
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

/// The candidates of `chain`, in order: local entries that name a model that can serve, and
/// upstream entries. `resolve` looks a name up in the catalog.
pub fn candidates(chain: &[String], resolve: impl Fn(&str) -> Option<LocalModel>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for entry in chain {
        let c = match entry.strip_prefix(UPSTREAM_PREFIX) {
            Some(model) => Candidate::Upstream(model.to_string()),
            None => match resolve(entry) {
                Some(m) if !m.unusable => Candidate::Local(m.id),
                _ => continue,
            },
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The candidates of `chain` on the server as it is now: models in the catalog that have not
/// failed and, for a chat request (`chat`), have a chat template.
pub fn live_candidates(r: &crate::registry::Registry, chain: &[String], chat: bool) -> Vec<Candidate> {
    let cat = r.catalog();
    candidates(chain, |name| {
        cat.resolve(name).map(|m| LocalModel {
            id: m.id.clone(),
            unusable: matches!(r.state(m.worker_id()), crate::registry::State::Failed(_)) || (chat && !r.can_chat(m)),
        })
    })
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
        assert_eq!(
            candidates(chain, resolve),
            vec![Candidate::Local("eden_small_1b_abcdef".into()), Candidate::Upstream("remote".into())]
        );
        let failed = |name: &str| Some(LocalModel { id: name.into(), unusable: name == "big" });
        assert_eq!(candidates(chain, failed)[0], Candidate::Local("small".into()));
        assert_eq!(candidates(&["gone".to_string()], |_| None), vec![]);
    }
}
