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
