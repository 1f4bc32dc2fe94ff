//! Reading a JSON schema's `pattern` (a regular expression, which llama.cpp's schema converter
//! turns into grammar rules) into its [`shape`](super::shape): characters, classes, escapes,
//! `.`, anchors, groups (`(...)`, `(?:...)`), alternatives and quantifiers (a `?` after a
//! quantifier makes it lazy and changes nothing here). Lenient, like [`gbnf`](super::gbnf).

use super::shape::{Node, Rules};

/// The pattern as one unnamed rule; an error when its groups nest deeper than
/// [`MAX_DEPTH`](super::MAX_DEPTH).
pub fn rules(pattern: &str) -> Result<Rules, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut at = 0;
    Ok(vec![(String::new(), alternatives(&chars, &mut at, 0)?)])
}

fn alternatives(p: &[char], at: &mut usize, depth: usize) -> Result<Vec<Vec<Node>>, String> {
    if depth > super::MAX_DEPTH {
        return Err(format!("groups nest deeper than {} levels", super::MAX_DEPTH));
    }
    let mut alts = vec![Vec::new()];
    while let Some(&c) = p.get(*at) {
        *at += 1;
        let node = match c {
            ')' => break,
            '|' => {
                alts.push(Vec::new());
                continue;
            }
            '^' | '$' => Node::Atom { empty: true },
            '\\' => {
                *at += 1;
                Node::Atom { empty: false }
            }
            '[' => {
                // llama.cpp's converter copies a class as it is, and its grammar reads `[]` and
                // `[^]` as holding no character: they match the empty string there.
                if p.get(*at) == Some(&'^') {
                    *at += 1;
                }
                let mut n = 0;
                while let Some(&d) = p.get(*at) {
                    *at += 1;
                    if d == '\\' {
                        *at += 1;
                    } else if d == ']' {
                        break;
                    }
                    n += 1;
                }
                Node::Atom { empty: n == 0 }
            }
            '(' => {
                if p.get(*at) == Some(&'?') {
                    *at += 2;
                }
                Node::Group(alternatives(p, at, depth + 1)?)
            }
            '*' | '+' | '?' | '{' => {
                let (min, max) = match c {
                    '*' => (0, None),
                    '+' => (1, None),
                    '?' => (0, Some(1)),
                    _ => counts(p, at),
                };
                if p.get(*at) == Some(&'?') {
                    *at += 1;
                }
                let seq = alts.last_mut().expect("never empty");
                if let Some(prev) = seq.pop() {
                    seq.push(Node::Repeat { node: Box::new(prev), min, max });
                }
                continue;
            }
            _ => Node::Atom { empty: false },
        };
        alts.last_mut().expect("never empty").push(node);
    }
    Ok(alts)
}

/// `m}`, `m,}` or `m,n}` after a `{`.
fn counts(p: &[char], at: &mut usize) -> (u64, Option<u64>) {
    let end = p[*at..].iter().position(|&c| c == '}').map_or(p.len(), |k| *at + k);
    let body: String = p[*at..end].iter().collect();
    *at = (end + 1).min(p.len());
    let mut parts = body.splitn(2, ',').map(|x| x.trim().parse::<u64>().ok());
    let min = parts.next().flatten().unwrap_or(0);
    match parts.next() {
        None => (min, Some(min)),
        Some(max) => (min, max),
    }
}

#[cfg(test)]
mod tests {
    use super::super::shape::check;
    use super::*;

    fn ok(p: &str) -> bool {
        check(&rules(p).unwrap()).is_ok()
    }

    #[test]
    fn ordinary_patterns_pass() {
        for p in [
            r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$",
            r"^([a-z]+\.)*[a-z]+$",
            r"^\d{3}-\d{4}$",
            r"^(?:[01]?\d|2[0-3]):[0-5]\d$",
            r"^(\+\d{1,3})?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}$",
            r"^a+?b*?$",
        ] {
            assert!(ok(p), "{p}: {:?}", check(&rules(p).unwrap()));
        }
    }

    #[test]
    fn quantified_groups_that_match_empty_are_refused() {
        let e = check(&rules("^((a?){0,44}){0,44}$").unwrap()).unwrap_err();
        assert!(e.contains("empty string") && e.contains("the pattern"), "{e}");
        assert!(!ok("^(a*)*$"));
        assert!(!ok("^(a|)+$"));
        assert!(!ok("^(?:b?c?)+$"));
        assert!(check(&rules("^((ab){0,40}c){0,40}$").unwrap()).unwrap_err().contains("multiply"));
        // An empty class is empty in llama.cpp's grammar.
        assert!(!ok("^(([]|a){0,44}){0,44}$"));
        // Nesting is bounded before anything recurses on it.
        assert!(rules(&"(".repeat(1_000_000)).is_err());
    }
}
