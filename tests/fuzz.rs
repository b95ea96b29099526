//! The fuzz targets of `fuzz/` (their bodies are `switchyard::fuzzing`), run by the test command in two
//! modes, each printing what it ran:
//!
//! - in-process, always: every target over its seed corpus (`fuzz/corpus/<target>/`) and a
//!   deterministic mutation loop (a fixed pseudo-random sequence, so a failure reproduces);
//! - coverage-guided: `fuzz/` built with libFuzzer's instrumentation (the flags cargo-fuzz passes, which
//!   stable rustc accepts) and each target run for `SWITCHYARD_FUZZ_SECONDS` (default 3) seconds with
//!   bounded input size, memory and time per input. When it cannot be built here (no C++ compiler, no
//!   crates.io for libfuzzer-sys), the test says so and passes on the in-process mode alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard::fuzzing::TARGETS;

/// Mutated inputs per target in the in-process mode.
const MUTATIONS: usize = 4000;
/// Largest input either mode tries.
const MAX_LEN: usize = 8192;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// xorshift64*: a fixed pseudo-random sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the decoders under test.
const INTERESTING: &[u8] = b"\r\n\0 \t:;=\"\\,0123456789abcdefABCDEF/?#@[]{}%\x7f\x80\xff";

/// One to four mutations of `input`, sometimes spliced with `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => out.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                let b = rng.next() as u8;
                out.insert(i, b);
            }
        }
    }
    out.truncate(MAX_LEN);
    out
}

/// Runs `body` on `input`; a panic fails the test with the input (hex) and where it was saved.
fn run_one(target: &str, body: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
        let dir = std::env::temp_dir().join("switchyard-fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{target}-{}", what.replace(' ', "-")));
        let _ = std::fs::write(&path, input);
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("fuzz target {target} failed on {what} (saved to {}): {hex}", path.display());
    }
}

#[test]
fn fuzz_targets_hold_their_invariants_over_the_seeds_and_deterministic_mutations() {
    for (target, body) in TARGETS {
        let seeds = seeds(target);
        let start = Instant::now();
        for (i, seed) in seeds.iter().enumerate() {
            run_one(target, body, seed, &format!("seed {i}"));
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
        let mut pool = seeds.clone();
        for i in 0..MUTATIONS {
            let (parent, other) = (rng.below(pool.len()), rng.below(seeds.len()));
            let input = mutate(&mut rng, &pool[parent], &seeds[other]);
            run_one(target, body, &input, &format!("mutation {i}"));
            // Keep some mutants as parents, so that mutations stack.
            if i % 8 == 0 && pool.len() < 256 {
                pool.push(input);
            }
        }
        let runs = seeds.len() + MUTATIONS;
        let per_s = runs as f64 / start.elapsed().as_secs_f64();
        println!("fuzz (in-process mode) {target}: {} seeds + {MUTATIONS} mutations, {per_s:.0} execs/s", seeds.len());
    }
}

/// The directory the coverage-guided build goes to: beside the test's own build.
fn fuzz_target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let base = if base.is_absolute() { base } else { root().join(base) };
    base.join("fuzz")
}

fn host_triple() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("host: ").map(str::to_string))
}

/// The instrumentation cargo-fuzz asks of rustc for libFuzzer (stable rustc accepts all of it).
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing";

/// Builds the libFuzzer binaries; their directory, or why they cannot be built here.
fn build_fuzzers() -> Result<PathBuf, String> {
    let triple = host_triple().ok_or("rustc -vV names no host")?;
    let target_dir = fuzz_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--bins", "--target", &triple, "--manifest-path"])
        .arg(root().join("fuzz/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(12).collect();
        return Err(format!("the build failed:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    Ok(target_dir.join(triple).join("release"))
}

/// A `stat::name: value` line of libFuzzer's final statistics.
fn stat(output: &str, name: &str) -> Option<u64> {
    output.lines().find_map(|l| l.strip_prefix(&format!("stat::{name}:")).and_then(|v| v.trim().parse().ok()))
}

fn run_fuzzer(bin: &Path, target: &str, seconds: u64) {
    let work = std::env::temp_dir().join(format!("switchyard-fuzz-{}-{target}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("corpus")).unwrap();
    // New inputs go to the scratch corpus (the first directory); the committed seeds stay as they are.
    let out = Command::new(bin.join(target))
        .arg(work.join("corpus"))
        .arg(root().join("fuzz/corpus").join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .args(["-rss_limit_mb=2048", "-malloc_limit_mb=512", "-timeout=10", "-seed=1", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", work.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {target} fuzzer: {e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "fuzz target {target} failed (artifacts in {}):\n{}",
            work.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let runs = stat(&log, "number_of_executed_units").unwrap_or(0);
    assert!(runs > 0, "the {target} fuzzer ran nothing:\n{log}");
    println!(
        "fuzz (libFuzzer mode) {target}: {runs} runs in {seconds} s, {} execs/s, {} new units, peak RSS {} MiB",
        stat(&log, "average_exec_per_sec").unwrap_or(0),
        stat(&log, "new_units_added").unwrap_or(0),
        stat(&log, "peak_rss_mb").unwrap_or(0)
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn fuzz_targets_survive_a_short_coverage_guided_run() {
    let seconds: u64 = std::env::var("SWITCHYARD_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let start = Instant::now();
    let bin = match build_fuzzers() {
        Ok(bin) => bin,
        Err(why) => {
            println!("fuzz (libFuzzer mode) not available here, only the in-process mode ran: {why}");
            return;
        }
    };
    println!("fuzz (libFuzzer mode): built in {:.0?}", start.elapsed().max(Duration::from_millis(1)));
    for (target, _) in TARGETS {
        run_fuzzer(&bin, target, seconds);
    }
}
