//! The plan loader under fuzzing, as part of the suite: every plan in `plans/` is mutated —
//! byte flips, truncations, repeated or dropped lines, deep nesting, huge numbers and
//! durations, bytes that are not UTF-8, very long lines, stray syntax, runaway templates — and
//! each case is loaded in-process (plus the criteria check when it loads). The promise checked:
//! no input panics, none takes longer than `CASE_BOUND`, and every error is located (a
//! file:line:col, or the file) and renders.
//!
//! Seeded and bounded: the same cases every run. A failure prints the seed and case number;
//! `PLANRUN_FUZZ_SEED=<seed> PLANRUN_FUZZ_CASE=<n> cargo test --test tests fuzz::` replays that
//! one case, and its input is written beside the test's temporary files. `PLANRUN_FUZZ_CASES`
//! runs more (or fewer) cases; a different seed explores other inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use planrun::diag::{Diags, Source};
use planrun::plan::LoadOptions;
use planrun::plan::load::Syntax;

const SEED: u64 = 0x0010_5eed_f022_0001;
const CASES: u64 = 2000;
/// Far above what any case takes (tens of milliseconds in a debug build); a case past it is
/// a hang in all but name.
const CASE_BOUND: Duration = Duration::from_secs(10);

/// splitmix64: small, fast and the same on every platform and toolchain.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    FlipByte,
    Truncate,
    DuplicateLine,
    DeleteLine,
    SwapLines,
    DeepNesting,
    HugeNumber,
    HugeDuration,
    NotUtf8,
    LongLine,
    Token,
    Template,
}

/// Weighted: the cheap byte-level mutations most, the slow ones (long lines, runaway
/// templates) rarely.
const MUTATIONS: &[(Mutation, usize)] = &[
    (Mutation::FlipByte, 20),
    (Mutation::Truncate, 6),
    (Mutation::DuplicateLine, 10),
    (Mutation::DeleteLine, 10),
    (Mutation::SwapLines, 6),
    (Mutation::DeepNesting, 6),
    (Mutation::HugeNumber, 10),
    (Mutation::HugeDuration, 8),
    (Mutation::NotUtf8, 6),
    (Mutation::LongLine, 2),
    (Mutation::Token, 20),
    (Mutation::Template, 2),
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999",
    "1e308",
    "1.7976931348623157e309",
    "-0.0",
    "0x7fffffffffffffff",
    "1_000_000_000_000",
];

const DURATIONS: &[&str] = &[
    "300000000000y",
    "500000000000y",
    "99y",
    "100y",
    "18446744073709551615ns",
    "18446744073709551615s",
    "0s",
    "1ns",
    "9999999999999999999999d",
];

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\"",
    "'",
    "=",
    "#",
    "\\",
    ";",
    "-",
    "/-",
    "/*",
    "*/",
    "//",
    "\"\"\"",
    "#\"",
    "\n",
    "\r",
    "\t",
    "\u{feff}",
    "null",
    "#null",
    "true",
    "#true",
    "inf",
    "#inf",
    "nan",
    "#nan",
    "[[phase]]\n",
    "[[phase.stage]]\n",
    "[plan]\n",
    "[vars]\n",
    "[defaults.exec]\n",
    "[profile.x]\n",
    "phase \"p\" {\n",
    "stage \"s\" driver=\"sleep\" duration=\"1s\"\n",
    "repeat = 4294967295\n",
    "repeat 4294967295\n",
    "pause = \"99y\"\n",
    "duration = \"99y\"\n",
    "{{ vars.probes }}",
    "{{",
    "}}",
    "{%",
    "%}",
    "{% for i in range(99999) %}",
    "{% endfor %}",
    "criteria = [\"count(where ok) == 0\"]\n",
    "driver = \"nope\"\n",
    "seed = -1\n",
];

const TEMPLATES: &[&str] = &[
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{{ range(100000) }}",
    "{% set s = 'xxxxxxxxxx' %}{% for i in range(24) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
    "{{ vars }}",
    "{{ vars.nope.deeper }}",
    "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
    "{{ 1 / 0 }}",
    "{{ 9223372036854775807 + 1 }}",
    "{{ 'a'|indent(9999999999) }}",
    "{{ vars|tojson(indent=9999999999) }}",
    "{{ [1]|slice(9999999999999)|length }}",
    "{{ '%999999999999s'|format(1) }}",
];

fn pick_mutation(rng: &mut Rng) -> Mutation {
    let total: usize = MUTATIONS.iter().map(|(_, w)| w).sum();
    let mut at = rng.below(total);
    for (m, w) in MUTATIONS {
        if at < *w {
            return *m;
        }
        at -= w;
    }
    Mutation::FlipByte
}

/// Byte offsets where lines start.
fn line_starts(b: &[u8]) -> Vec<usize> {
    std::iter::once(0).chain(b.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i + 1)).collect()
}

fn line_range(b: &[u8], starts: &[usize], i: usize) -> std::ops::Range<usize> {
    let s = starts[i].min(b.len());
    let e = starts.get(i + 1).copied().unwrap_or(b.len()).max(s);
    s..e
}

/// A random run of ASCII digits (a number in the plan), if any.
fn digit_run(rng: &mut Rng, b: &[u8]) -> Option<std::ops::Range<usize>> {
    let runs: Vec<_> = b
        .iter()
        .enumerate()
        .filter(|(i, c)| c.is_ascii_digit() && (*i == 0 || !b[i - 1].is_ascii_digit()))
        .map(|(i, _)| i..i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count())
        .collect();
    (!runs.is_empty()).then(|| runs[rng.below(runs.len())].clone())
}

/// The inside of a random `"…"` on one line, if any.
fn string_body(rng: &mut Rng, b: &[u8]) -> Option<std::ops::Range<usize>> {
    let quotes: Vec<usize> = b.iter().enumerate().filter(|(_, c)| **c == b'"').map(|(i, _)| i).collect();
    let pairs: Vec<_> = quotes
        .windows(2)
        .filter(|w| !b[w[0] + 1..w[1]].contains(&b'\n') && b[w[0] + 1..w[1]].first() != Some(&b'"'))
        .map(|w| w[0] + 1..w[1])
        .collect();
    (!pairs.is_empty()).then(|| pairs[rng.below(pairs.len())].clone())
}

fn mutate(rng: &mut Rng, m: Mutation, b: &mut Vec<u8>, syntax: Syntax) {
    let starts = line_starts(b);
    let at = rng.below(b.len() + 1);
    let line_at = starts[rng.below(starts.len())].min(b.len());
    match m {
        Mutation::FlipByte if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] = if rng.below(2) == 0 { b[i] ^ (1 << rng.below(8)) } else { rng.next() as u8 };
        }
        Mutation::Truncate => b.truncate(at),
        Mutation::DuplicateLine => {
            let r = line_range(b, &starts, rng.below(starts.len()));
            let line = b[r.clone()].to_vec();
            let times = *rng.pick(&[1, 2, 50]);
            for _ in 0..times {
                b.splice(r.end..r.end, line.iter().copied());
            }
        }
        Mutation::DeleteLine => {
            let r = line_range(b, &starts, rng.below(starts.len()));
            b.drain(r);
        }
        Mutation::SwapLines => {
            let (i, j) = (rng.below(starts.len()), rng.below(starts.len()));
            let (i, j) = (i.min(j), i.max(j));
            if i != j {
                let (ri, rj) = (line_range(b, &starts, i), line_range(b, &starts, j));
                let (li, lj) = (b[ri.clone()].to_vec(), b[rj.clone()].to_vec());
                b.splice(rj, li);
                b.splice(ri, lj);
            }
        }
        Mutation::DeepNesting => {
            let n = *rng.pick(&[8, 63, 64, 65, 79, 80, 81, 200, 1300, 5000]);
            let text = match (syntax, rng.below(3)) {
                (Syntax::Kdl, 0) => format!("deep {}{}\n", "a {".repeat(n), "}".repeat(n)),
                (Syntax::Kdl, 1) => format!("deep {}\n", "a {".repeat(n)),
                (Syntax::Kdl, _) => format!("/* {} */\n", "/* ".repeat(n) + &"*/ ".repeat(n)),
                (Syntax::Toml, 0) => format!("deep = {}{}\n", "[".repeat(n), "]".repeat(n)),
                (Syntax::Toml, 1) => format!("deep = {}1{}\n", "{a=".repeat(n), "}".repeat(n)),
                (Syntax::Toml, _) => format!("[{}]\n", vec!["a"; n].join(".")),
            };
            b.splice(line_at..line_at, text.into_bytes());
        }
        Mutation::HugeNumber => {
            let with = rng.pick(NUMBERS).as_bytes().to_vec();
            match digit_run(rng, b) {
                Some(r) => drop(b.splice(r, with)),
                None => drop(b.splice(at..at, with)),
            }
        }
        Mutation::HugeDuration => {
            let with = rng.pick(DURATIONS).as_bytes().to_vec();
            match string_body(rng, b) {
                Some(r) => drop(b.splice(r, with)),
                None => drop(b.splice(at..at, with)),
            }
        }
        Mutation::NotUtf8 => {
            let bad = *rng.pick(&[0xFFu8, 0xFE, 0xC3, 0xE2, 0x80, 0xF0, 0xC0, 0xED]);
            b.insert(at, bad);
        }
        Mutation::LongLine => {
            let long = "x".repeat(*rng.pick(&[65_534, 65_536, 70_000]));
            match (rng.below(3), string_body(rng, b)) {
                (0, Some(r)) => drop(b.splice(r, long.into_bytes())),
                (1, _) => drop(b.splice(line_at..line_at, format!("{long} = 1\n").into_bytes())),
                _ => drop(b.splice(line_at..line_at, format!("{long}\n").into_bytes())),
            }
        }
        Mutation::Token => {
            let t = rng.pick(TOKENS).as_bytes().to_vec();
            // Into a line's end or a random spot: both find different breakage.
            let at = if rng.below(2) == 0 { line_at } else { at };
            b.splice(at..at, t);
        }
        Mutation::Template => {
            let t = rng.pick(TEMPLATES).as_bytes().to_vec();
            match string_body(rng, b) {
                Some(r) => drop(b.splice(r, t)),
                None => drop(b.splice(at..at, t)),
            }
        }
        Mutation::FlipByte => {}
    }
}

struct Case {
    plan: PathBuf,
    syntax: Syntax,
    mutations: Vec<Mutation>,
    bytes: Vec<u8>,
}

fn plans() -> Vec<(PathBuf, Syntax, Vec<u8>)> {
    let dir = super::support::repo().join("plans");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("plans/")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| Syntax::from_path(&p).map(|s| (p.clone(), s, std::fs::read(&p).expect("read plan"))))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 8, "expected the plans in plans/, found {}", out.len());
    out
}

/// Case `n` of `seed`: generated from its own stream, so it replays without the ones before it.
fn case(seed: u64, n: u64, plans: &[(PathBuf, Syntax, Vec<u8>)]) -> Case {
    let mut rng = Rng(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let (plan, syntax, bytes) = rng.pick(plans);
    let mut bytes = bytes.clone();
    let mutations: Vec<Mutation> = (0..1 + rng.below(3)).map(|_| pick_mutation(&mut rng)).collect();
    for m in &mutations {
        mutate(&mut rng, *m, &mut bytes, *syntax);
    }
    Case { plan: plan.clone(), syntax: *syntax, mutations, bytes }
}

/// Load one input the way `planrun validate` does; `Err` says what broke the promise.
fn check(name: &str, bytes: Vec<u8>, syntax: Syntax) -> Result<(), String> {
    let registry = planrun::drivers::Registry;
    let opts = LoadOptions::default();
    let diags = match String::from_utf8(bytes) {
        Ok(text) => match planrun::plan::load_str(name, &text, syntax, &opts, &registry) {
            Ok(plan) => {
                let _ = (plan.expected_duration(), plan.canonical());
                Diags(planrun::criteria::check_criteria(&plan, &Source::new(name, text.as_str())))
            }
            Err(d) => d,
        },
        Err(e) => match planrun::plan::read::source_from_bytes(name, e.into_bytes()) {
            Ok(_) => return Err("bytes that are not UTF-8 were accepted".into()),
            Err(d) => Diags::from(d),
        },
    };
    if let Some(d) = diags.0.iter().find(|d| d.location().is_none()) {
        return Err(format!("an error without a location: {}", d.message));
    }
    let rendered = diags.render(false);
    if !diags.0.is_empty() && !rendered.contains(name) {
        return Err(format!("a rendered error does not name the file:\n{rendered}"));
    }
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

fn save(case: &Case, seed: u64, n: u64) -> PathBuf {
    let ext = if matches!(case.syntax, Syntax::Kdl) { "kdl" } else { "toml" };
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{seed:#x}-{n}.{ext}"));
    let _ = std::fs::write(&path, &case.bytes);
    path
}

#[test]
fn mutated_plans_never_panic_hang_or_fail_unlocated() {
    let seed = env_u64("PLANRUN_FUZZ_SEED").unwrap_or(SEED);
    let cases: Vec<u64> = match env_u64("PLANRUN_FUZZ_CASE") {
        Some(n) => vec![n],
        None => (0..env_u64("PLANRUN_FUZZ_CASES").unwrap_or(CASES)).collect(),
    };
    let plans = plans();
    let (tx, rx) = mpsc::channel();
    let total = cases.len();
    let (worker_cases, worker_plans) = (cases.clone(), plans.clone());
    // One worker, on an ordinary 2 MiB thread stack: the loader must not need more.
    std::thread::Builder::new()
        .name("fuzz".into())
        .spawn(move || {
            for n in worker_cases {
                let case = case(seed, n, &worker_plans);
                let name = format!("fuzz-{n}.{}", if matches!(case.syntax, Syntax::Kdl) { "kdl" } else { "toml" });
                let started = Instant::now();
                let bytes = case.bytes.clone();
                let result = catch_unwind(AssertUnwindSafe(|| check(&name, bytes, case.syntax)))
                    .unwrap_or_else(|_| Err("panicked (message above)".into()));
                if tx.send((n, case, result, started.elapsed())).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the fuzz worker");

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, 0);
    for &pending in &cases {
        let (n, case, result, took) = match rx.recv_timeout(CASE_BOUND) {
            Ok(r) => r,
            Err(_) => {
                let case = case(seed, pending, &plans);
                panic!(
                    "case {pending} ({} with {:?}) ran past {CASE_BOUND:?}\n  input: {}\n  replay: PLANRUN_FUZZ_SEED={seed:#x} PLANRUN_FUZZ_CASE={pending} cargo test --test tests fuzz::",
                    case.plan.file_name().unwrap_or_default().to_string_lossy(),
                    case.mutations,
                    save(&case, seed, pending).display()
                )
            }
        };
        slowest = slowest.max((took, n));
        if total == 1 {
            eprintln!("fuzz: case {n} ({:?}, took {took:?}): {}", case.mutations, save(&case, seed, n).display());
        }
        if took > CASE_BOUND {
            failures.push(format!("case {n}: took {took:?}, over {CASE_BOUND:?}"));
        }
        if let Err(what) = result {
            let saved = save(&case, seed, n);
            failures.push(format!(
                "case {n} ({} with {:?}): {what}\n  input: {}\n  replay: PLANRUN_FUZZ_SEED={seed:#x} PLANRUN_FUZZ_CASE={n} cargo test --test tests fuzz::",
                case.plan.file_name().unwrap_or_default().to_string_lossy(),
                case.mutations,
                saved.display()
            ));
        }
    }
    eprintln!(
        "fuzz: {total} cases (seed {seed:#x}) in {:?}; slowest case {} took {:?}",
        started.elapsed(),
        slowest.1,
        slowest.0
    );
    assert!(failures.is_empty(), "{} of {total} cases broke the promise:\n{}", failures.len(), failures.join("\n"));
}
