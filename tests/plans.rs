//! Every plan in plans/ ships as a TOML and a KDL twin, and both load to the same model.

use planrun::drivers::Registry;
use planrun::plan::{LoadOptions, load_file_with};

use super::support::repo;

#[test]
fn every_plan_has_an_equal_twin() {
    let dir = repo().join("plans");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let twin = path.with_extension("kdl");
        assert!(twin.exists(), "{} has no KDL twin", path.display());
        let (a, _) =
            load_file_with(&path, &LoadOptions::default(), &Registry).unwrap_or_else(|d| panic!("{}", d.render(false)));
        let (b, _) =
            load_file_with(&twin, &LoadOptions::default(), &Registry).unwrap_or_else(|d| panic!("{}", d.render(false)));
        assert_eq!(a.canonical(), b.canonical(), "{} and its twin differ", path.display());
        assert_eq!(a, b);
        // Profiles must load too, and resolve identically in both syntaxes.
        for profile in &a.profiles {
            let o = LoadOptions { profile: Some(profile.clone()), sets: vec![] };
            let (pa, _) = load_file_with(&path, &o, &Registry).unwrap_or_else(|d| panic!("{}", d.render(false)));
            let (pb, _) = load_file_with(&twin, &o, &Registry).unwrap_or_else(|d| panic!("{}", d.render(false)));
            assert_eq!(pa.canonical(), pb.canonical(), "profile {profile} of {}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 1, "no plans found in {}", dir.display());
}

#[test]
fn resolved_plan_reloads_to_the_same_model() {
    let path = repo().join("plans/demo.toml");
    let o = LoadOptions { profile: Some("quick".into()), sets: vec![("probes".into(), "3".into())] };
    let (plan, _) = load_file_with(&path, &o, &Registry).unwrap();
    let text = planrun::run::resolved_toml(&plan, "demo.toml").unwrap();
    let again = planrun::plan::load_str(
        "plan.resolved.toml",
        &text,
        planrun::plan::load::Syntax::Toml,
        &LoadOptions::default(),
        &Registry,
    )
    .unwrap_or_else(|d| panic!("{}", d.render(false)));
    assert_eq!(plan.canonical(), again.canonical());
    assert_eq!(again.var("probes").unwrap().value, serde_json::json!(3));
}
