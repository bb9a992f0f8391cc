//! [`run_crash_cases`]: the driver every crash-simulation test shares — seeds × crash points,
//! environment overrides, and failures reported with the seed and crash point that replay them.

/// How many crash cases to run and how densely to sample crash points.
#[derive(Debug, Clone, Copy)]
pub struct CrashPlan {
    /// Environment variable that overrides `cases` (e.g. `PAGELOG_CRASH_CASES`).
    pub cases_env: &'static str,
    /// Crash cases to run by default.
    pub cases: u64,
    /// Crash points per seed: a run of `n` disk operations is crashed every `n / points_per_seed`
    /// operations (every operation when the run is short).
    pub points_per_seed: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Run crash cases: for seed after seed (from `PAGELOG_SEED_BASE`, default 0), `ops(seed)`
/// counts the mutating disk operations of the workload run without faults, then
/// `check(seed, k)` crashes after the k-th operation and checks the oracle, for crash points
/// spread over the run. Panics listing the failures, each with the `PAGELOG_SEED=…
/// PAGELOG_CRASH_POINT=…` that replays it; with those two variables set, runs only that case.
/// Returns the number of cases run.
pub fn run_crash_cases(
    plan: CrashPlan,
    mut ops: impl FnMut(u64) -> u64,
    mut check: impl FnMut(u64, u64) -> Result<(), String>,
) -> u64 {
    if let (Some(seed), Some(point)) = (env_u64("PAGELOG_SEED"), env_u64("PAGELOG_CRASH_POINT")) {
        if let Err(e) = check(seed, point) {
            panic!("seed {seed} crash point {point}: {e}");
        }
        return 1;
    }
    let target = env_u64(plan.cases_env).unwrap_or(plan.cases);
    let mut cases = 0u64;
    let mut failures = Vec::new();
    let mut seed = env_u64("PAGELOG_SEED_BASE").unwrap_or(0);
    while cases < target {
        let total = ops(seed);
        let step = (total / plan.points_per_seed.max(1)).max(1);
        let mut k = seed % step;
        while k <= total && cases < target {
            if let Err(e) = check(seed, k) {
                failures.push(format!(
                    "seed {seed} crash point {k}: {e} (replay: PAGELOG_SEED={seed} PAGELOG_CRASH_POINT={k})"
                ));
            }
            cases += 1;
            k += step;
        }
        seed += 1;
    }
    eprintln!("crash cases run: {cases} over {seed} seeds");
    assert!(
        failures.is_empty(),
        "{} of {cases} crash cases failed:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    cases
}
