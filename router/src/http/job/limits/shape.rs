//! The shape of a grammar or a regular expression, as far as its cost on the worker goes:
//! alternatives, sequences, repetitions and references to rules. llama.cpp's grammar engine
//! keeps one parse stack per way the text read so far can be matched, and writes each bounded
//! repetition out as copies; two shapes make either explode on a small text:
//!
//! - a repetition of something that can match the empty string (`(a?){0,44}`): every count of
//!   empty matches is another stack;
//! - a rule that can match the empty string appearing twice in one sequence, both times leading
//!   back to itself (`x ::= ("a" x x)?`): the ways to split the text grow exponentially;
//!
//! and nested repetition counts multiply (`((a){0,44}){0,44}` is 1,936 copies). Pure functions.

use std::collections::{HashMap, HashSet};

/// One element of a sequence.
#[derive(Debug, Clone)]
pub enum Node {
    /// Text that matches exactly one character, literal or token (or none, for `""`, `^`, `$`).
    Atom { empty: bool },
    /// A reference to a rule of the grammar.
    Ref(String),
    /// Alternatives, each a sequence.
    Group(Vec<Vec<Node>>),
    /// A repetition: at most `max` times (`None`: unbounded), at least `min`.
    Repeat { node: Box<Node>, min: u64, max: Option<u64> },
}

/// The most copies that nested repetition counts may multiply to.
pub const MAX_REPEAT_PRODUCT: u64 = 1024;

/// Rules by name; a regular expression is one rule with no name.
pub type Rules = Vec<(String, Vec<Vec<Node>>)>;

/// Checks the three shapes above; the error names what was found.
pub fn check(rules: &Rules) -> Result<(), String> {
    let nullable = nullable_rules(rules);
    let reach = reaches(rules);
    for (name, alts) in rules {
        let ctx = Ctx { nullable: &nullable, reach: &reach, rule: name };
        for seq in alts {
            ctx.seq(seq, 1)?;
        }
    }
    Ok(())
}

struct Ctx<'a> {
    nullable: &'a HashSet<String>,
    reach: &'a HashMap<String, HashSet<String>>,
    rule: &'a str,
}

impl Ctx<'_> {
    fn seq(&self, seq: &[Node], product: u64) -> Result<(), String> {
        let mut back = 0;
        for n in seq {
            if nullable(n, self.nullable) && self.leads_back(n) {
                back += 1;
                if back == 2 {
                    return Err(format!(
                        "rule `{}` can match the empty string twice in one sequence, both times leading back to \
                         itself: the ways to match grow exponentially with the text (make one of them non-empty)",
                        self.rule
                    ));
                }
            }
            self.node(n, product)?;
        }
        Ok(())
    }

    fn node(&self, n: &Node, product: u64) -> Result<(), String> {
        match n {
            Node::Atom { .. } | Node::Ref(_) => Ok(()),
            Node::Group(alts) => alts.iter().try_for_each(|s| self.seq(s, product)),
            Node::Repeat { node, min, max } => {
                if max.is_none_or(|m| m > 1) && nullable(node, self.nullable) {
                    return Err(format!(
                        "a repetition in {} repeats something that can match the empty string, as `(a?)*` \
                         does: each count of empty matches is another way to match (make what repeats non-empty)",
                        self.whose()
                    ));
                }
                let count = max.unwrap_or(*min).max(1);
                let product = product.saturating_mul(count);
                if product > MAX_REPEAT_PRODUCT {
                    return Err(format!(
                        "nested repetition counts in {} multiply to more than {MAX_REPEAT_PRODUCT}",
                        self.whose()
                    ));
                }
                self.node(node, product)
            }
        }
    }

    /// Whether `n` refers, directly or through other rules, to the rule being checked.
    fn leads_back(&self, n: &Node) -> bool {
        let mut refs = Vec::new();
        refs_of(n, &mut refs);
        refs.iter().any(|r| *r == self.rule || self.reach.get(*r).is_some_and(|s| s.contains(self.rule)))
    }

    fn whose(&self) -> String {
        if self.rule.is_empty() {
            "the pattern".into()
        } else {
            format!("rule `{}`", self.rule)
        }
    }
}

fn nullable(n: &Node, rules: &HashSet<String>) -> bool {
    match n {
        Node::Atom { empty } => *empty,
        Node::Ref(r) => rules.contains(r),
        Node::Group(alts) => alts.iter().any(|s| s.iter().all(|x| nullable(x, rules))),
        Node::Repeat { node, min, .. } => *min == 0 || nullable(node, rules),
    }
}

/// The rules that can match the empty string (a fixed point: at most one round per rule).
fn nullable_rules(rules: &Rules) -> HashSet<String> {
    let mut set = HashSet::new();
    loop {
        let before = set.len();
        for (name, alts) in rules {
            if !set.contains(name) && alts.iter().any(|s| s.iter().all(|x| nullable(x, &set))) {
                set.insert(name.clone());
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

fn refs_of<'a>(n: &'a Node, out: &mut Vec<&'a str>) {
    match n {
        Node::Atom { .. } => {}
        Node::Ref(r) => out.push(r),
        Node::Group(alts) => alts.iter().flatten().for_each(|x| refs_of(x, out)),
        Node::Repeat { node, .. } => refs_of(node, out),
    }
}

/// For each rule, every rule it reaches through references.
fn reaches(rules: &Rules) -> HashMap<String, HashSet<String>> {
    let direct: HashMap<&str, Vec<&str>> = rules
        .iter()
        .map(|(name, alts)| {
            let mut refs = Vec::new();
            alts.iter().flatten().for_each(|x| refs_of(x, &mut refs));
            (name.as_str(), refs)
        })
        .collect();
    let mut out = HashMap::new();
    for name in direct.keys() {
        let mut seen: HashSet<String> = HashSet::new();
        let mut todo: Vec<&str> = direct[name].clone();
        while let Some(r) = todo.pop() {
            if seen.insert(r.to_string()) {
                todo.extend(direct.get(r).into_iter().flatten());
            }
        }
        out.insert(name.to_string(), seen);
    }
    out
}
