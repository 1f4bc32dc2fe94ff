//! Reading a GBNF grammar (llama.cpp's grammar format) into its [`shape`](super::shape), as
//! llama.cpp reads it: rules `name ::= ...`, literals, character classes, `.`, tokens `<...>`,
//! groups, alternatives, `*` `+` `?` `{m}` `{m,}` `{m,n}`, and comments from `#` to the end of
//! the line (`\n` or `\r`). Lenient: what it cannot read it skips, and llama.cpp's own parser
//! refuses the grammar later; bracket nesting is bounded before this runs.

use super::shape::{Node, Rules};

#[derive(Debug, PartialEq)]
enum Tok {
    Name(String),
    Def,
    Atom { empty: bool },
    Open,
    Close,
    Bar,
    Rep { min: u64, max: Option<u64> },
}

fn tokens(g: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = g.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => while chars.next_if(|&d| d != '\n' && d != '\r').is_some() {},
            '"' | '[' | '<' => {
                let close = match c {
                    '"' => '"',
                    '[' => ']',
                    _ => '>',
                };
                let mut n = 0;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == close {
                        break;
                    } else if c == '[' && n == 0 && d == '^' {
                        // `[^]`, like `[]`, holds no character: llama.cpp matches it as empty.
                        continue;
                    }
                    n += 1;
                }
                out.push(Tok::Atom { empty: c != '<' && n == 0 });
            }
            '.' => out.push(Tok::Atom { empty: false }),
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            '|' => out.push(Tok::Bar),
            '*' => out.push(Tok::Rep { min: 0, max: None }),
            '+' => out.push(Tok::Rep { min: 1, max: None }),
            '?' => out.push(Tok::Rep { min: 0, max: Some(1) }),
            '{' => {
                let body: String = chars.by_ref().take_while(|&d| d != '}').collect();
                let mut parts = body.splitn(2, ',').map(|p| p.trim().parse::<u64>().ok());
                let min = parts.next().flatten().unwrap_or(0);
                let max = match parts.next() {
                    None => Some(min),
                    Some(m) => m,
                };
                out.push(Tok::Rep { min, max });
            }
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                chars.next_if_eq(&'=');
                out.push(Tok::Def);
            }
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                let mut name = String::from(c);
                while let Some(d) = chars.next_if(|d| d.is_ascii_alphanumeric() || *d == '-' || *d == '_') {
                    name.push(d);
                }
                out.push(Tok::Name(name));
            }
            _ => {}
        }
    }
    out
}

/// The grammar's rules, each a list of alternatives; an error when groups nest deeper than
/// [`MAX_DEPTH`](super::MAX_DEPTH) (checked before, but this reader's recursion must not rely on it).
pub fn rules(g: &str) -> Result<Rules, String> {
    let toks = tokens(g);
    // A rule starts at a name followed by `::=` and runs to the next such name.
    let starts: Vec<usize> =
        (0..toks.len()).filter(|&i| matches!(toks[i], Tok::Name(_)) && toks.get(i + 1) == Some(&Tok::Def)).collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(toks.len());
            let Tok::Name(name) = &toks[s] else { unreachable!("a start is a name") };
            let mut at = s + 2;
            Ok((name.clone(), alternatives(&toks[..end], &mut at, 0)?))
        })
        .collect()
}

fn alternatives(toks: &[Tok], at: &mut usize, depth: usize) -> Result<Vec<Vec<Node>>, String> {
    if depth > super::MAX_DEPTH {
        return Err(format!("the grammar nests groups deeper than {} levels", super::MAX_DEPTH));
    }
    let mut alts = vec![Vec::new()];
    while let Some(t) = toks.get(*at) {
        *at += 1;
        let node = match t {
            Tok::Close => break,
            Tok::Bar => {
                alts.push(Vec::new());
                continue;
            }
            Tok::Def => continue,
            Tok::Rep { min, max } => {
                let seq = alts.last_mut().expect("never empty");
                if let Some(prev) = seq.pop() {
                    seq.push(Node::Repeat { node: Box::new(prev), min: *min, max: *max });
                }
                continue;
            }
            Tok::Atom { empty } => Node::Atom { empty: *empty },
            Tok::Name(n) => Node::Ref(n.clone()),
            Tok::Open => Node::Group(alternatives(toks, at, depth + 1)?),
        };
        alts.last_mut().expect("never empty").push(node);
    }
    Ok(alts)
}

#[cfg(test)]
mod tests {
    use super::super::shape::check;
    use super::*;

    fn ok(g: &str) -> bool {
        check(&rules(g).unwrap()).is_ok()
    }

    fn err(g: &str) -> String {
        check(&rules(g).unwrap()).unwrap_err()
    }

    #[test]
    fn real_grammars_pass() {
        // llama.cpp's JSON grammar, in short, and what its schema converter writes.
        let json = r#"
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"#;
        assert!(ok(json), "{:?}", check(&rules(json).unwrap()));
        assert!(ok(r#"root ::= ([0-9]{1,3} "."){3} [0-9]{1,3}"#));
        assert!(ok("root ::= item*  # a list\nitem ::= [a-z]+ \".\""));
        // A right-recursive list of a nullable rule: one way to match, linear.
        assert!(ok(r#"items ::= "a" items | "#));
    }

    #[test]
    fn exploding_shapes_are_refused() {
        let e = err(r#"root ::= (("a"?){0,44}){0,44}"#);
        assert!(e.contains("empty string"), "{e}");
        let e = err("root ::= x \"!\"\nx ::= (\"a\" x x)?");
        assert!(e.contains("`x`") && e.contains("twice"), "{e}");
        // An empty class matches the empty string in llama.cpp: the same payloads spelled so.
        assert!(err("root ::= x \"!\"\nx ::= (\"a\" x x | [])").contains("twice"));
        assert!(err("root ::= (([^]|\"a\"){0,44}){0,44}").contains("empty string"));
        assert!(ok("root ::= <think> [a-z]+ <[1234]>"));
        assert!(rules(&format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100))).is_err());
        assert!(!ok(r#"root ::= ws* "a"
ws ::= " "?"#));
        let e = err(r#"root ::= (("a"){1,44}){1,44}"#);
        assert!(e.contains("multiply"), "{e}");
    }

    #[test]
    fn comments_end_at_a_carriage_return_too() {
        // llama.cpp ends a comment at `\r`: what follows is grammar, and is checked.
        let g = "root ::= x # note\rx ::= (\"a\"?)*";
        assert_eq!(rules(g).unwrap().len(), 2);
        assert!(!ok(g));
    }
}
