//! Log-probabilities of a token under the model's distribution before sampling: the softmax of
//! the raw logits, as llama-server reports them by default. Computed only for requests that
//! ask (one pass over the vocabulary per generated token).

/// The log of the softmax's denominator: `ln Σ exp(logit)`, computed stably.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    max + sum.ln() as f32
}

/// The `n` highest logits as `(token, logit)`, highest first; ties keep the lower token first.
/// One pass; `out` is cleared and reused.
pub fn top_n(logits: &[f32], n: usize, out: &mut Vec<(i32, f32)>) {
    out.clear();
    if n == 0 {
        return;
    }
    for (tok, &l) in logits.iter().enumerate() {
        if out.len() == n && out[n - 1].1 >= l {
            continue;
        }
        // First position whose logit is below this one: equal logits stay in token order.
        let at = out.partition_point(|&(_, x)| x >= l);
        if out.len() == n {
            out.pop();
        }
        out.insert(at, (tok as i32, l));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one() {
        let logits = [1.0f32, 2.0, 3.0, -1.0, 0.5];
        let lse = log_sum_exp(&logits);
        let total: f32 = logits.iter().map(|&l| (l - lse).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        // Large logits do not overflow.
        let big = [1000.0f32, 1000.0];
        assert!((log_sum_exp(&big) - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn top_n_is_ordered_and_stable() {
        let logits = [0.1f32, 5.0, 3.0, 5.0, -2.0, 4.0];
        let mut out = Vec::new();
        top_n(&logits, 3, &mut out);
        assert_eq!(out, vec![(1, 5.0), (3, 5.0), (5, 4.0)]);
        top_n(&logits, 10, &mut out);
        assert_eq!(out.len(), 6);
        assert_eq!(out.last(), Some(&(4, -2.0)));
        top_n(&logits, 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn top_n_matches_a_full_sort() {
        let mut x = 12345u32;
        let logits: Vec<f32> = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 8) as f32 / 65536.0
            })
            .collect();
        let mut sorted: Vec<(i32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as i32, l)).collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out = Vec::new();
        top_n(&logits, 20, &mut out);
        assert_eq!(out, sorted[..20].to_vec());
    }
}
