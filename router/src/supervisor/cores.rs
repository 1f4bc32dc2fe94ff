//! Automatic core spread: which cores a worker is pinned to when the config names none.

/// Picks `want` cores from `all` for a new worker, preferring the cores that the fewest
/// running workers are pinned to (ties: the lowest index), so that workers with fewer threads
/// than the machine has cores get disjoint sets while there are enough. Returns the cores
/// sorted; all of `all` when `want` is at least its length.
pub fn assign(all: &[usize], taken: &[Vec<usize>], want: usize) -> Vec<usize> {
    if want >= all.len() {
        return all.to_vec();
    }
    let mut load: Vec<(usize, usize)> =
        all.iter().map(|&c| (taken.iter().filter(|set| set.contains(&c)).count(), c)).collect();
    load.sort_unstable();
    let mut picked: Vec<usize> = load.into_iter().take(want).map(|(_, c)| c).collect();
    picked.sort_unstable();
    picked
}

/// The cores this process may run on.
pub fn allowed() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_bucket_shared::cpus::parse_cpu_list;

    #[test]
    fn spreads_over_the_least_used_cores() {
        let all: Vec<usize> = (0..8).collect();
        let a = assign(&all, &[], 4);
        assert_eq!(a, vec![0, 1, 2, 3]);
        let b = assign(&all, std::slice::from_ref(&a), 4);
        assert_eq!(b, vec![4, 5, 6, 7]);
        // A third worker overlaps as little as it can.
        let c = assign(&all, &[a, b], 2);
        assert_eq!(c, vec![0, 1]);
    }

    #[test]
    fn as_many_threads_as_cores_gets_them_all() {
        let all = vec![0, 1];
        assert_eq!(assign(&all, &[vec![0, 1]], 2), vec![0, 1]);
        assert_eq!(assign(&all, &[], 8), vec![0, 1]);
    }

    #[test]
    fn lists_round_trip() {
        for cores in [vec![0, 1, 2, 3, 8], vec![5], vec![0, 2, 4], vec![1, 2, 3, 10, 11]] {
            let s = model_bucket_shared::cpus::format_cpu_list(&cores);
            assert_eq!(parse_cpu_list(&s).unwrap(), cores, "{s}");
        }
        assert_eq!(model_bucket_shared::cpus::format_cpu_list(&[0, 1, 2, 3, 8]), "0-3,8");
        assert!(!allowed().is_empty());
    }
}
