//! Mutation test of the metadata values llama.cpp reads (T-G1): seeded,
//! structure-aware mutations (`olm::gguf::mutate`) of the tiny model in
//! each covered architecture go through the real binary. Every file `olm show` accepts must run
//! (`olm run FILE --raw -n 2 hi` reaches llama.cpp: the tiny model is
//! complete) without dying by a signal or a panic; every refusal, by
//! either command, is exit 5 with one `error:` line and nothing on stdout.
//! An abort here is a validation rule olm is missing.
//!
//! Bounded by count and time; set `OLM_MUTATION_SEED` to start at another
//! seed (the report names each failing seed, which reproduces it).

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use olm::gguf::mutate::{mutate, Mutation};
use olm::gguf::writer::{tiny_model_for, GgufBuilder, TinyArchitecture};

use crate::bad_models::run_within;
use crate::common::{stderr, stdout, TestEnv};

/// Mutations tried (when time allows).
const MUTATIONS: u64 = 500;
/// Fewest mutations that must have been tried for the test to count.
const MIN_MUTATIONS: u64 = 100;
/// Wall-clock budget for all mutations; the test stops starting new ones
/// after it.
const BUDGET: Duration = Duration::from_secs(40);
/// Workers running mutations side by side.
const WORKERS: u64 = 2;
/// Longest one `olm show` or `olm run` of the tiny model may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// What happened to one mutation.
#[derive(Default)]
struct Tally {
    tried: AtomicU64,
    refused_by_show: AtomicU64,
    ran: AtomicU64,
    refused_by_run: AtomicU64,
}

#[test]
fn mutated_models_never_crash_olm_or_llama_cpp() {
    let env = TestEnv::new();
    let first_seed = std::env::var("OLM_MUTATION_SEED")
        .ok()
        .and_then(|seed| seed.parse::<u64>().ok())
        .unwrap_or(0);
    // Every covered architecture in turn (seed % 6): each has its own rules.
    let bases: Vec<GgufBuilder> = TinyArchitecture::ALL
        .iter()
        .map(|&architecture| tiny_model_for(architecture))
        .collect();
    let tally = Tally::default();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (env, bases, tally) = (&env, &bases, &tally);
            scope.spawn(move || {
                let mut seed = first_seed + worker;
                while seed < first_seed + MUTATIONS && started.elapsed() < BUDGET {
                    let base = &bases[(seed % bases.len() as u64) as usize];
                    check_mutation(env, seed, &mutate(base, seed), tally);
                    seed += WORKERS;
                }
            });
        }
    });
    let tried = tally.tried.load(Ordering::Relaxed);
    let ran = tally.ran.load(Ordering::Relaxed);
    let refused_by_show = tally.refused_by_show.load(Ordering::Relaxed);
    let refused_by_run = tally.refused_by_run.load(Ordering::Relaxed);
    eprintln!(
        "mutation test: {tried} mutations from seed {first_seed} in {:.1} s: {} accepted by show \
         ({ran} ran, {refused_by_run} refused by run with exit 5), {refused_by_show} refused with exit 5; \
         no crash",
        started.elapsed().as_secs_f64(),
        ran + refused_by_run,
    );
    assert!(
        tried >= MIN_MUTATIONS,
        "only {tried} mutations fitted in {BUDGET:?} (at least {MIN_MUTATIONS} needed)"
    );
    assert!(
        ran > 0,
        "no mutation was accepted: the run path went untested"
    );
    assert!(refused_by_show > 0, "no mutation was refused");
}

fn check_mutation(env: &TestEnv, seed: u64, mutation: &Mutation, tally: &Tally) {
    let path = env.path().join(format!("mutant-{seed}.gguf"));
    std::fs::write(&path, mutation.to_bytes()).expect("write the mutated model");
    let what = |command: &str| format!("seed {seed} ({}): olm {command}", mutation.describe());
    let show = run_within(
        env.olm().arg("show").arg(&path),
        COMMAND_DEADLINE,
        &what("show"),
    );
    tally.tried.fetch_add(1, Ordering::Relaxed);
    match show.status.code() {
        Some(0) => {
            let run = run_within(
                env.olm()
                    .arg("run")
                    .arg(&path)
                    .args(["--raw", "-n", "2", "hi"]),
                COMMAND_DEADLINE,
                &what("run"),
            );
            match run.status.code() {
                Some(0) => tally.ran.fetch_add(1, Ordering::Relaxed),
                // llama.cpp refused it cleanly (a shape olm does not model).
                Some(5) => {
                    assert_one_error_line(&run, &what("run"));
                    tally.refused_by_run.fetch_add(1, Ordering::Relaxed)
                }
                _ => panic!("{}: {}", what("run"), describe_exit(&run)),
            };
        }
        Some(5) => {
            assert_one_error_line(&show, &what("show"));
            assert!(
                show.stdout.is_empty(),
                "{}: stdout {}",
                what("show"),
                stdout(&show)
            );
            tally.refused_by_show.fetch_add(1, Ordering::Relaxed);
        }
        _ => panic!("{}: {}", what("show"), describe_exit(&show)),
    }
    remove(&path);
}

fn remove(path: &Path) {
    std::fs::remove_file(path).expect("remove the mutated model");
}

#[track_caller]
fn assert_one_error_line(output: &Output, what: &str) {
    let stderr = stderr(output);
    let errors = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .count();
    assert_eq!(errors, 1, "{what}: expected one error line in\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}: a panic in\n{stderr}");
}

/// The exit status and both streams, for a failure message.
fn describe_exit(output: &Output) -> String {
    format!(
        "{:?} (a signal or a crash exit: 101 panic, 134 abort, 139 segfault)\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        stdout(output),
        stderr(output)
    )
}
