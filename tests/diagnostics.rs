//! Rendered plan errors, snapshot-tested: each points at file:line:col with a caret, in both
//! syntaxes, and says what to do.

use planrun::plan::LoadOptions;
use planrun::plan::load::Syntax;

fn render(name: &str, text: &str, opts: LoadOptions) -> String {
    let syntax = if name.ends_with(".kdl") { Syntax::Kdl } else { Syntax::Toml };
    match planrun::plan::load_str(name, text, syntax, &opts, &planrun::drivers::Registry) {
        Ok(_) => panic!("{name} should not load"),
        Err(d) => d.render(false),
    }
}

fn plain(name: &str, text: &str) -> String {
    render(name, text, LoadOptions::default())
}

const STAGE_TOML: &str = "[plan]\nname = \"x\"\n\n[[phase]]\nname = \"p\"\n\n[[phase.stage]]\nname = \"s\"\n";

#[test]
fn toml_syntax_error() {
    insta::assert_snapshot!(plain("bad.toml", "[plan]\nname = \"x\n"));
}

#[test]
fn kdl_syntax_error() {
    insta::assert_snapshot!(plain("bad.kdl", "plan {\n    name \"x\"\n"));
}

#[test]
fn unknown_key_suggests_the_closest() {
    insta::assert_snapshot!(plain("bad.toml", &format!("{STAGE_TOML}driver = \"sleep\"\nduraton = \"5s\"\n")));
}

#[test]
fn unknown_key_in_kdl() {
    insta::assert_snapshot!(plain(
        "bad.kdl",
        "plan name=\"x\"\nphase \"p\" {\n    stage \"s\" driver=\"exec\" {\n        runn \"true\"\n    }\n}\n"
    ));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(plain(
        "bad.toml",
        &format!("{STAGE_TOML}driver = \"exec\"\nrun = \"true\"\nrepeat = \"often\"\n")
    ));
}

#[test]
fn bad_duration() {
    insta::assert_snapshot!(plain(
        "bad.toml",
        &format!("{STAGE_TOML}driver = \"sleep\"\nduration = \"5 fortnights\"\n")
    ));
}

#[test]
fn duration_without_unit_in_kdl() {
    insta::assert_snapshot!(plain(
        "bad.kdl",
        "plan name=\"x\"\nphase \"p\" {\n    stage \"s\" driver=\"sleep\" duration=\"90\"\n}\n"
    ));
}

#[test]
fn unknown_driver() {
    insta::assert_snapshot!(plain("bad.toml", &format!("{STAGE_TOML}driver = \"exce\"\n")));
}

#[test]
fn undefined_template_var() {
    insta::assert_snapshot!(plain(
        "bad.toml",
        &format!(
            "[vars]\nrounds = 3\n\n{STAGE_TOML}driver = \"exec\"\nrun = \"true\"\nrepeat = \"{{{{ vars.round }}}}\"\n"
        )
    ));
}

#[test]
fn unknown_profile_lists_valid_ones() {
    let text = "[plan]\nname = \"x\"\n[vars]\nn = 1\n[profile.quick]\nn = 2\n[profile.dev]\nn = 3\n";
    insta::assert_snapshot!(render("p.toml", text, LoadOptions { profile: Some("quik".into()), sets: vec![] }));
}

#[test]
fn set_with_wrong_type_or_unknown_var() {
    let text = "[plan]\nname = \"x\"\n[vars]\nagents = 5\ninterval = \"5m\"\n";
    let bad_type =
        render("p.toml", text, LoadOptions { profile: None, sets: vec![("interval".into(), "soon".into())] });
    let unknown = render("p.toml", text, LoadOptions { profile: None, sets: vec![("agent".into(), "3".into())] });
    insta::assert_snapshot!(format!("{bad_type}\n{unknown}"));
}

#[test]
fn several_problems_are_reported_together() {
    let text = format!("{STAGE_TOML}driver = \"sleep\"\n\n[[phase.stage]]\nname = \"s\"\ndriver = \"nope\"\n");
    // Three problems: a sleep without duration, an unknown driver, and `s` named twice.
    let out = plain("bad.toml", &text);
    assert!(out.contains("a sleep stage needs a `duration`"), "{out}");
    assert!(out.contains("unknown driver `nope`"), "{out}");
    assert!(out.contains("stage name `s` is used twice"), "{out}");
    assert!(out.contains("3 problems found"), "{out}");
}

#[test]
fn validate_exits_2_with_location() {
    let sb = super::support::Sandbox::new();
    sb.write("bad.toml", &format!("{STAGE_TOML}driver = \"sleep\"\nduraton = \"5s\"\n"));
    let r = sb.run(&["validate", "bad.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bad.toml:10:1"), "{}", r.stderr);
}

#[test]
fn infinite_and_nan_floats_are_refused_where_written() {
    let toml = format!("{STAGE_TOML}driver = \"sleep\"\nduration = \"1s\"\n\n[vars]\nrate = inf\nother = nan\n");
    let got = plain("inf.toml", &toml);
    assert!(got.contains("`inf` is not a finite number"), "{got}");
    assert!(got.contains("inf.toml:13:8"), "{got}");
    let kdl =
        "plan { name \"x\"; }\nvars { rate #inf; }\nphase \"p\" { stage \"s\" driver=\"sleep\" duration=\"1s\"; }\n";
    let got = plain("inf.kdl", kdl);
    assert!(got.contains("is not a finite number"), "{got}");
    assert!(got.contains("inf.kdl:2:13"), "{got}");
    let got = plain("nan.kdl", &kdl.replace("#inf", "#nan"));
    assert!(got.contains("is not a finite number"), "{got}");
    let got = plain("nan.toml", &toml.replace("rate = inf\n", ""));
    assert!(got.contains("`nan` is not a finite number"), "{got}");
    assert!(got.contains("nan.toml:13:9"), "{got}");
}

#[test]
fn a_wrong_provider_name_is_pointed_at_not_the_whole_stage() {
    // The KSI plan with one agent's provider misspelt: the caret lands on that value.
    let text = std::fs::read_to_string(super::support::repo().join("plans/ksi-10-day.toml")).unwrap();
    let at = text.find("provider = \"claude\"").expect("the plan names provider claude") + "provider = ".len();
    let text = format!("{}\"claudee\"{}", &text[..at], &text[at + "\"claude\"".len()..]);
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    let got = plain("ksi.toml", &text);
    assert!(got.contains("uses unknown provider `claudee`"), "{got}");
    assert!(got.contains(&format!("ksi.toml:{line}:{col}")), "want ksi.toml:{line}:{col} in\n{got}");
}

// Hardening: no plan input makes planrun panic, abort or hang; every failure is an error at a
// place (file:line:col, or the file) with exit code 2. Each test below failed before its fix.

/// Run planrun, failing — not hanging the suite — if it is still running after `secs`.
fn run_within(sb: &super::support::Sandbox, args: &[&str], secs: u64) -> super::support::Ran {
    use std::process::Stdio;
    let mut child = sb.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn planrun");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait for planrun").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("planrun {args:?} was still running after {secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("planrun output");
    super::support::Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const SLEEP_STAGE_TOML: &str =
    "\n[[phase]]\nname = \"p\"\n\n[[phase.stage]]\nname = \"s\"\ndriver = \"sleep\"\nduration = \"1s\"\n";

#[test]
fn kdl_nested_1300_deep_is_a_located_error_not_an_abort() {
    let sb = super::support::Sandbox::new();
    sb.write("deep.kdl", &format!("plan name=\"x\"\n{}{}\n", "a {".repeat(1300), "}".repeat(1300)));
    let r = run_within(&sb, &["validate", "deep.kdl"], 60);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nested more than 64 levels deep"), "{}", r.stderr);
    // The 65th `{`: each `a {` is three columns.
    assert!(r.stderr.contains("deep.kdl:2:195"), "{}", r.stderr);
    // A block comment is whitespace however many `*` it holds (the parser recursed per token).
    let plan = "plan name=\"x\"\nphase \"p\" { stage \"s\" driver=\"sleep\" duration=\"1s\"; }\n";
    sb.write("stars.kdl", &format!("/*{}*/\n{plan}", "*".repeat(100_000)));
    let r = run_within(&sb, &["validate", "stars.kdl"], 60);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn nesting_limit_is_64_levels_in_both_syntaxes() {
    let deep = |n: usize| {
        let kdl = plain("deep.kdl", &format!("plan name=\"x\"\ndeep {}{}\n", "{ a ".repeat(n), "}".repeat(n)));
        let toml = plain("deep.toml", &format!("deep = {}{}\n[plan]\nname = \"x\"\n", "[".repeat(n), "]".repeat(n)));
        (kdl, toml)
    };
    for out in <[String; 2]>::from(deep(64)) {
        assert!(out.contains("unknown top-level key `deep`") && !out.contains("nested"), "{out}");
    }
    let (kdl, toml) = deep(65);
    assert!(kdl.contains("nested more than 64 levels deep") && kdl.contains("deep.kdl:2:262"), "{kdl}");
    assert!(toml.contains("nested more than 64 levels deep") && toml.contains("deep.toml:1:72"), "{toml}");
}

#[test]
fn an_error_past_column_65535_shows_a_window_of_its_line() {
    let long = "x".repeat(70_000);
    insta::assert_snapshot!(plain("long.toml", &format!("[plan]\nname = \"x\"\ndescription = \"{long}\" oops\n")));
}

#[test]
fn huge_durations_and_their_sums_are_located_errors() {
    let sb = super::support::Sandbox::new();
    // The two inputs that overflowed (exit 101).
    sb.write(
        "pause.toml",
        &format!("{STAGE_TOML}driver = \"sleep\"\nduration = \"1s\"\npause = \"300000000000y\"\nrepeat = 3\n"),
    );
    let r = run_within(&sb, &["validate", "pause.toml"], 30);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("pause.toml:11:9") && r.stderr.contains("is too long"), "{}", r.stderr);
    let stage =
        |name: &str, d: &str| format!("\n[[phase.stage]]\nname = \"{name}\"\ndriver = \"sleep\"\nduration = \"{d}\"\n");
    let two = format!(
        "[plan]\nname = \"x\"\n\n[[phase]]\nname = \"p\"\n{}{}",
        stage("a", "500000000000y"),
        stage("b", "500000000000y")
    );
    sb.write("two.toml", &two);
    let r = run_within(&sb, &["validate", "two.toml"], 30);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("two.toml:10:12"), "{}", r.stderr);
    // Each duration in range, but repeats and pauses add up past what a Duration holds.
    let got = plain(
        "repeat.toml",
        &format!("{STAGE_TOML}driver = \"sleep\"\nduration = \"99y\"\npause = \"99y\"\nrepeat = 4294967295\n"),
    );
    assert!(got.contains("stage `s` takes more than can be counted") && got.contains("repeat.toml:12:10"), "{got}");
    // Stages each under 100 years, the plan over.
    let got = plain(
        "sum.toml",
        &format!("[plan]\nname = \"x\"\n\n[[phase]]\nname = \"p\"\n{}{}", stage("a", "60y"), stage("b", "60y")),
    );
    assert!(got.contains("the plan's stages take 120years in all") && got.contains("sum.toml:4:3"), "{got}");
}

#[test]
fn runaway_templates_stop_with_a_located_error() {
    let sb = super::support::Sandbox::new();
    let loops = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    sb.write("loops.toml", &format!("[plan]\nname = \"x\"\ndescription = \"{loops}\"\n{SLEEP_STAGE_TOML}"));
    let r = run_within(&sb, &["validate", "loops.toml"], 60);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("loops.toml:3:15") && r.stderr.contains("template takes too long"), "{}", r.stderr);
    // 100 MB from a few bytes of template, in a criterion.
    sb.write(
        "big.toml",
        &format!("[plan]\nname = \"x\"\ncriteria = [\"{{{{ 'x' * 100000000 }}}}\"]\n{SLEEP_STAGE_TOML}"),
    );
    let r = run_within(&sb, &["validate", "big.toml"], 60);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("big.toml:3:13") && r.stderr.contains("template renders more than 1 MiB"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_plan_over_1_mib_is_refused_naming_its_size() {
    let sb = super::support::Sandbox::new();
    let plan = "plan name=\"x\"\nphase \"p\" { stage \"s\" driver=\"sleep\" duration=\"1s\"; }\n";
    sb.write("big.kdl", &format!("{plan}// {}\n", "x".repeat(1024 * 1024)));
    let r = run_within(&sb, &["validate", "big.kdl"], 60);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("big.kdl: plan is 1 MiB (1048648 bytes), over the limit of 1 MiB"), "{}", r.stderr);
}

#[test]
fn a_plan_that_is_not_utf8_points_at_the_first_bad_byte() {
    let sb = super::support::Sandbox::new();
    std::fs::write(sb.path().join("bad.toml"), b"[plan]\nname = \"x\xffy\"\n").expect("write");
    let r = run_within(&sb, &["validate", "bad.toml"], 30);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bad.toml:2:10") && r.stderr.contains("byte 0xFF is not valid UTF-8"), "{}", r.stderr);
}

#[test]
fn a_plan_without_phases_points_at_its_plan_table() {
    let got = plain("none.toml", "[plan]\nname = \"x\"\n");
    assert!(got.contains("plan `x` has no phases") && got.contains("none.toml:1:2"), "{got}");
    let got = plain("none.kdl", "plan name=\"x\"\n");
    assert!(got.contains("plan `x` has no phases") && got.contains("none.kdl:1:1"), "{got}");
}

#[test]
fn validate_refuses_what_is_not_a_regular_file() {
    let sb = super::support::Sandbox::new();
    let fifo = std::ffi::CString::new(sb.path().join("fifo.toml").into_os_string().into_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path and a mode; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    std::fs::create_dir(sb.path().join("dir.toml")).expect("mkdir");
    std::os::unix::fs::symlink("/dev/zero", sb.path().join("zero.kdl")).expect("symlink");
    for (file, what) in [("fifo.toml", "a FIFO (named pipe)"), ("dir.toml", "a directory"), ("zero.kdl", "a device")] {
        let r = run_within(&sb, &["validate", file], 30);
        assert_eq!(r.code, 2, "{file}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("{file} is {what}, not a plan file")), "{}", r.stderr);
    }
}

#[test]
fn out_of_range_numeric_options_are_usage_errors_before_anything_is_created() {
    let sb = super::support::Sandbox::new();
    std::fs::copy(super::support::repo().join("plans/demo.toml"), sb.path().join("demo.toml")).expect("copy plan");
    let usage = |args: &[&str], option: &str| {
        let r = run_within(&sb, args, 60);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(option), "{args:?}: {}", r.stderr);
    };
    for scale in ["1e300", "1000001", "0", "-1", "nan", "inf"] {
        usage(&["run", "--quiet", &format!("--time-scale={scale}"), "demo.toml"], "--time-scale");
    }
    usage(&["plan", "show", "--time-scale", "1e15", "demo.toml"], "--time-scale");
    assert!(!sb.path().join("results").exists(), "a refused run created its run directory");
    for tolerance in ["11", "-0.5", "nan"] {
        usage(&["analyze", &format!("--tolerance={tolerance}"), "."], "--tolerance");
    }
    usage(&["run", "--seed=-1", "demo.toml"], "--seed");
    usage(&["run", "--suspend-after", "300000000000y", "demo.toml"], "--suspend-after");
    // The edges are fine.
    let r = run_within(
        &sb,
        &["run", "--dry-run", "--time-scale", "1e6", "--seed", "18446744073709551615", "demo.toml"],
        60,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}
