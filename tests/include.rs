//! `include`: a phase made of another plan's phase — loaded with its own vars, profile and
//! defaults, run under the including phase's name — and the errors an include can meet.

use crate::support::{Sandbox, events, of_kind};

const PART: &str = r#"
[plan]
name = "part"
criteria = ["count(where kind == \"exec\") >= 2"]
[vars]
n = 1
word = "plain"
[profile.more]
n = 4
[defaults.exec]
tail_lines = 3
[[phase]]
name = "work"
criteria = ["success_rate >= 1"]
[[phase.stage]]
name = "echo"
driver = "exec"
run = "echo {{ vars.word }}"
repeat = "{{ vars.n }}"
criteria = ["max(latency_ms where kind == \"exec\") < 10s"]
"#;

fn suite(include: &str) -> String {
    format!(
        "[plan]\nname = \"suite\"\n[vars]\nword = \"from-suite\"\n\
         [[phase]]\nname = \"first\"\n[[phase.stage]]\nname = \"hello\"\ndriver = \"exec\"\nrun = \"true\"\n\
         [[phase]]\nname = \"reused\"\nlabel = \"the part plan\"\ninclude = {include}\n"
    )
}

#[test]
fn an_included_phase_runs_under_the_including_name_with_its_vars_profile_and_criteria() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("parts")).unwrap();
    sb.write("parts/part.toml", PART);
    sb.write(
        "suite.toml",
        &suite(r#"{ plan = "parts/part.toml", profile = "more", vars = { word = "{{ vars.word }}" } }"#),
    );
    let r = sb.run(&["validate", "suite.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = sb.run(&["run", "suite.toml", "--quiet", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = sb.path().join(r.run_dir());
    let evs = events(&dir);
    let execs: Vec<_> = of_kind(&evs, "exec").into_iter().filter(|e| e["phase"] == "reused").collect();
    assert_eq!(execs.len(), 4, "the profile `more` gave n = 4");
    assert!(execs.iter().all(|e| e["stage"] == "echo"));
    let tail = crate::support::attrs(execs[0])["stdout_tail"].clone();
    assert_eq!(tail, "from-suite", "the include's vars are templates of the including plan");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let checks: Vec<(String, String)> = rep["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["scope"].as_str().unwrap().to_string(), c["check"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        checks.contains(&("reused".into(), "count(where kind == \"exec\") >= 2".into())),
        "plan criteria of a one-phase plan judge the phase: {checks:?}"
    );
    assert!(checks.contains(&("reused".into(), "success_rate >= 1".into())), "{checks:?}");
    assert!(
        checks.contains(&("reused/echo".into(), "max(latency_ms where kind == \"exec\") < 10s".into())),
        "{checks:?}"
    );
    let resolved = std::fs::read_to_string(dir.join("plan.resolved.toml")).unwrap();
    assert!(
        resolved.contains("echo from-suite") && !resolved.contains("include"),
        "the run records the stages themselves:\n{resolved}"
    );
    assert!(resolved.contains("tail_lines = 3"), "the included plan's defaults apply to its stages:\n{resolved}");
}

#[test]
fn include_errors_name_the_file_and_the_place() {
    let sb = Sandbox::new();
    sb.write("part.toml", PART);

    sb.write("suite.toml", &suite(r#"{ plan = "nope.toml" }"#));
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(
        r.code == 2 && r.stderr.contains("nope.toml`, which is not a file") && r.stderr.contains("suite.toml:"),
        "{}",
        r.stderr
    );

    sb.write("suite.toml", &suite(r#"{ plan = "part.toml", phase = "wrok" }"#));
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(
        r.code == 2 && r.stderr.contains("has no phase `wrok`") && r.stderr.contains("did you mean `work`"),
        "{}",
        r.stderr
    );

    sb.write("suite.toml", &suite(r#"{ plan = "part.toml", vars = { nn = 3 } }"#));
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(r.code == 2 && r.stderr.contains("nn"), "an unknown var of the included plan: {}", r.stderr);

    sb.write("suite.toml", &suite(r#"{ plan = "part.toml", plann = "x" }"#));
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(r.code == 2 && r.stderr.contains("plann"), "{}", r.stderr);

    // A problem inside the included plan points into that file.
    sb.write("bad.toml", &PART.replace("driver = \"exec\"", "driver = \"exce\""));
    sb.write("suite.toml", &suite(r#"{ plan = "bad.toml" }"#));
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(
        r.code == 2 && r.stderr.contains("bad.toml:") && r.stderr.contains("unknown driver `exce`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("included plan `bad.toml` has 1 problem"), "{}", r.stderr);

    // So does a bad criterion of the included plan.
    sb.write("badc.toml", &PART.replace("success_rate >= 1", "sucess_rate >= 1"));
    sb.write("suite.toml", &suite(r#"{ plan = "badc.toml" }"#));
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(r.code == 2 && r.stderr.contains("badc.toml:") && r.stderr.contains("sucess_rate"), "{}", r.stderr);

    // A stage of the including phase named like an included one.
    sb.write(
        "suite.toml",
        "[plan]\nname = \"s\"\n[[phase]]\nname = \"x\"\ninclude = { plan = \"part.toml\" }\n[[phase.stage]]\nname = \"echo\"\ndriver = \"exec\"\nrun = \"true\"\n",
    );
    let r = sb.run(&["validate", "suite.toml"]);
    assert!(r.code == 2 && r.stderr.contains("`echo` is already a stage of the included phase"), "{}", r.stderr);
}

#[test]
fn a_plan_that_includes_itself_is_an_error_naming_the_chain() {
    let sb = Sandbox::new();
    sb.write("a.toml", "[plan]\nname = \"a\"\n[[phase]]\nname = \"x\"\ninclude = { plan = \"b.toml\" }\n");
    sb.write("b.toml", "[plan]\nname = \"b\"\n[[phase]]\nname = \"y\"\ninclude = { plan = \"a.toml\" }\n");
    let r = sb.run(&["validate", "a.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("a plan includes itself") && r.stderr.contains("b.toml →"), "{}", r.stderr);
}
