//! What every seeded simulation of error rates draws and judges with: binomial traffic and the Wilson
//! interval of a counted rate. Included by `sluice-stats`'s margin and simulation tests and by the
//! controller's end-to-end error-rate test, so that all three count the same way.
#![allow(dead_code)]

use sluice_stats::Moments;

/// Successes in `n` trials of probability `p`, by geometric skips (O(np)).
pub fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    if p <= 0.0 || n == 0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(rng, n, 1.0 - p);
    }
    let lq = (1.0 - p).ln();
    let (mut k, mut at) = (0u64, 0f64);
    loop {
        let u = 1.0 - rng.f64();
        at += (u.ln() / lq).floor() + 1.0;
        if at > n as f64 {
            return k;
        }
        k += 1;
    }
}

/// `n` outcomes of 0 or 1, `errors` of them 1.
pub fn add_outcomes(m: &mut Moments, n: u64, errors: u64) {
    m.n += n;
    m.sum += errors as f64;
    m.sum_sq += errors as f64;
}

/// The upper end of the two-sided 95 % Wilson interval of `k` successes in `n`.
pub fn wilson_upper(k: usize, n: usize) -> f64 {
    let (k, n, z) = (k as f64, n as f64, 1.959_964);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (centre + spread) / (1.0 + z * z / n)
}

/// The repository's file `path`.
pub fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The table between the markers `begin` and `end` in `docs/metrics.md`. With `SLUICE_SIM_WRITE_DOCS`
/// set (as `scripts/error-rates` sets it), `rendered` is written there first: the published table is
/// always the simulation's output, never a hand-copied figure.
pub fn published_table(begin: &str, end: &str, rendered: &str) -> String {
    let path = repo("docs/metrics.md");
    if std::env::var("SLUICE_SIM_WRITE_DOCS").is_ok() {
        let doc = std::fs::read_to_string(&path).unwrap();
        let (head, rest) = doc.split_once(begin).unwrap();
        let (_, tail) = rest.split_once(end).unwrap();
        std::fs::write(&path, format!("{head}{begin}\n\n{rendered}\n{end}{tail}")).unwrap();
    }
    let doc = std::fs::read_to_string(&path).unwrap();
    let (_, rest) = doc.split_once(begin).expect("docs/metrics.md has the table's markers");
    rest.split_once(end).expect("the end marker").0.trim().to_string()
}
