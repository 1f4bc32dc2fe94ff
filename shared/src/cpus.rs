//! CPU core lists such as `"0-3,8,10-11"`.

/// Parses a core list into sorted, distinct core indices. Empty or malformed lists, and
/// ranges that run backwards or past core 4095, are errors.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |x: &str| x.parse::<usize>().map_err(|_| format!("bad core {x:?} in cpu list {s:?}"));
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b || b >= 4096 {
            return Err(format!("bad range {part:?} in cpu list {s:?}"));
        }
        cores.extend(a..=b);
    }
    cores.sort_unstable();
    cores.dedup();
    Ok(cores)
}

/// Renders cores as a list [`parse_cpu_list`] reads (the worker's `--cpus`): `0-3,8`.
pub fn format_cpu_list(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i];
        let mut end = start;
        while i + 1 < cores.len() && cores[i + 1] == end + 1 {
            i += 1;
            end = cores[i];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_cpu_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list("2, 1,1").unwrap(), vec![1, 2]);
        for bad in ["", "a", "3-1", "0-99999", "1,,2"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
    }
}
