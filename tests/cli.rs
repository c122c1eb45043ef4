//! Command-line habits users bring from k6, Locust and nextest: running part of a plan,
//! `--color`/`NO_COLOR`, help that says what each argument is, and completions that know the
//! plan's profile, phase and stage names.

use super::support::{Sandbox, bin, events, manifest, repo};

#[test]
fn only_and_skip_run_part_of_a_plan() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/demo.toml");
    let r = sb.run(&[
        "run",
        plan.to_str().unwrap(),
        "--quiet",
        "--no-analyze",
        "--only",
        "load/probe,load/side-probe",
        "--skip",
        "load/side-probe",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let stages: Vec<String> =
        manifest(&dir)["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap().to_string()).collect();
    assert_eq!(stages, ["probe"]);
    let kinds: std::collections::BTreeSet<String> =
        events(&dir).iter().map(|e| e["stage"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["probe"]);
    // The resolved plan holds only what ran, so `resume` sees the same stages.
    let resolved = std::fs::read_to_string(dir.join("plan.resolved.toml")).unwrap();
    assert!(!resolved.contains("side-probe"), "{resolved}");

    let r = sb.run(&["run", plan.to_str().unwrap(), "--quiet", "--only", "lod"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`lod` names no phase of this plan (did you mean `load`?)"), "{}", r.stderr);
}

#[test]
fn color_always_colors_even_piped_and_despite_no_color() {
    // Piped with NO_COLOR set (the sandbox sets it), diagnostics are plain text; an explicit
    // `--color always` wins over both.
    let sb = Sandbox::new();
    sb.write("bad.toml", "[plan]\nname = \"x\n");
    let plain = sb.run(&["validate", "bad.toml"]);
    assert_eq!(plain.code, 2);
    assert!(!plain.stderr.contains('\u{1b}'), "{}", plain.stderr);
    let colored = sb.run(&["--color", "always", "validate", "bad.toml"]);
    assert_eq!(colored.code, 2);
    assert!(colored.stderr.contains('\u{1b}'), "{}", colored.stderr);
}

#[test]
fn help_says_what_each_positional_argument_is() {
    let sb = Sandbox::new();
    for (args, want) in [
        (vec!["run", "--help"], "The plan file (.toml or .kdl)"),
        (vec!["validate", "--help"], "The plan file (.toml or .kdl)"),
        (vec!["resume", "--help"], "The run directory `planrun run` printed"),
        (vec!["analyze", "--help"], "A run directory, or a directory of runs"),
    ] {
        let r = sb.run(&args);
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains(want), "{args:?}: {}", r.stdout);
    }
}

#[test]
fn completions_offer_the_plans_profiles_stages_and_formats() {
    let sb = Sandbox::new();
    let plan = repo().join("plans/stability-50.toml");
    let complete = |words: &[&str]| -> Vec<String> {
        let out = std::process::Command::new(bin())
            .env("COMPLETE", "fish")
            .arg("--")
            .arg("planrun")
            .args(words)
            .current_dir(sb.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').next().unwrap().to_string()).collect()
    };
    let profiles = complete(&["run", plan.to_str().unwrap(), "--profile", ""]);
    assert_eq!(profiles, ["quick", "dev"], "{profiles:?}");
    let phases = complete(&["run", plan.to_str().unwrap(), "--only", "s"]);
    assert!(!phases.is_empty() && phases.iter().all(|p| p.starts_with('s')), "{phases:?}");
    let formats = complete(&["analyze", "x", "--format", ""]);
    assert_eq!(formats, ["md", "json", "junit", "html", "locust-csv"]);
    let script = sb.run(&["completions", "bash"]);
    assert_eq!(script.code, 0);
    assert!(script.stdout.contains("COMPLETE"), "{}", script.stdout);
}

#[test]
fn plan_build_says_which_build_a_plan_needs() {
    // `just run` picks the build with it: simulated plans need no release build.
    let sb = Sandbox::new();
    for (plan, want) in [("ksi-10-day", "debug"), ("fleet-1000", "release"), ("demo", "release")] {
        let path = repo().join(format!("plans/{plan}.toml"));
        let r = sb.run(&["plan", "build", path.to_str().unwrap()]);
        assert_eq!((r.code, r.stdout.trim()), (0, want), "{plan}: {}", r.stderr);
    }
}
