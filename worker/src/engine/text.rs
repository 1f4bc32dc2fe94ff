//! Turning token pieces into text that is safe to emit: whole UTF-8 characters only, and never
//! a stop string or any part of one that could still complete.

/// The text side of one sequence. Feed it each token's raw bytes with [`TextOut::push`].
///
/// Invariants: `held` never contains a complete stop string; everything emitted so far plus
/// `held` plus `pending` is exactly the bytes pushed (until a stop is found).
#[derive(Debug, Default)]
pub struct TextOut {
    /// Bytes of an incomplete UTF-8 character.
    pending: Vec<u8>,
    /// Decoded text not yet emitted because it could be the start of a stop string.
    held: String,
    stops: Vec<String>,
    /// A stop string was found; nothing more is emitted.
    stopped: bool,
}

/// What [`TextOut::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Keep generating.
    More,
    /// A stop string was reached; the text before it has been emitted.
    Stop,
}

impl TextOut {
    /// `stops` that are empty are ignored.
    pub fn new(stops: &[String]) -> TextOut {
        TextOut { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Default::default() }
    }

    /// Adds one token's bytes and appends to `out` whatever text is now safe to emit.
    pub fn push(&mut self, piece: &[u8], out: &mut String) -> Pushed {
        if self.stopped {
            return Pushed::Stop;
        }
        self.pending.extend_from_slice(piece);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    self.held.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // SAFETY of the unwrap: from_utf8 said these bytes are valid.
                    self.held.push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Invalid bytes: they will never become a character.
                        Some(n) => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(at) = self.first_stop() {
            out.push_str(&self.held[..at]);
            self.held.clear();
            self.pending.clear();
            self.stopped = true;
            return Pushed::Stop;
        }
        let keep = self.partial_stop_len();
        let emit = self.held.len() - keep;
        out.push_str(&self.held[..emit]);
        self.held.drain(..emit);
        Pushed::More
    }

    /// Ends the sequence: everything held is emitted (nothing, after a stop string).
    pub fn finish(&mut self, out: &mut String) {
        out.push_str(&self.held);
        out.push_str(&String::from_utf8_lossy(&self.pending));
        self.held.clear();
        self.pending.clear();
    }

    /// Byte offset in `held` of the earliest complete stop string.
    fn first_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn partial_stop_len(&self) -> usize {
        let mut keep = 0;
        for stop in &self.stops {
            let max = (stop.len() - 1).min(self.held.len());
            for len in (keep + 1..=max).rev() {
                let from = self.held.len() - len;
                if self.held.is_char_boundary(from) && stop.as_bytes().starts_with(&self.held.as_bytes()[from..]) {
                    keep = len;
                    break;
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut t = TextOut::new(&stops);
        let mut emitted = Vec::new();
        for p in pieces {
            let mut out = String::new();
            if t.push(p, &mut out) == Pushed::Stop {
                emitted.push(out);
                return (emitted, true);
            }
            emitted.push(out);
        }
        let mut out = String::new();
        t.finish(&mut out);
        emitted.push(out);
        (emitted, false)
    }

    #[test]
    fn split_utf8_characters_are_never_emitted_broken() {
        let e = "é".as_bytes();
        let (out, _) = run(&[], &[b"caf", &e[..1], &e[1..], b"!"]);
        assert_eq!(out, vec!["caf", "", "é", "!", ""]);
        let crab = "🦀".as_bytes();
        let (out, _) = run(&[], &[&crab[..1], &crab[1..3], &crab[3..]]);
        assert_eq!(out.concat(), "🦀");
        assert_eq!(out[0], "");
        assert_eq!(out[1], "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (out, _) = run(&[], &[b"a\xffb"]);
        assert_eq!(out.concat(), "a\u{fffd}b");
    }

    #[test]
    fn stop_across_token_boundaries_is_cut_and_not_emitted() {
        let (out, stopped) = run(&["</end>"], &[b"hello </", b"en", b"d> tail"]);
        assert!(stopped);
        assert_eq!(out, vec!["hello ", "", ""]);
        assert_eq!(out.concat(), "hello ");
    }

    #[test]
    fn text_is_held_only_while_it_could_become_a_stop() {
        let (out, stopped) = run(&["STOP"], &[b"ST", b"ART", b" S", b"x"]);
        assert!(!stopped);
        assert_eq!(out, vec!["", "START", " ", "Sx", ""]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (out, stopped) = run(&["world", "lo w"], &[b"hello world"]);
        assert!(stopped);
        assert_eq!(out.concat(), "hel");
    }

    #[test]
    fn held_prefix_is_flushed_at_the_end() {
        let (out, stopped) = run(&["\n\n"], &[b"line\n"]);
        assert!(!stopped);
        assert_eq!(out, vec!["line", "\n"]);
    }
}
