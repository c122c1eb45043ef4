//! `planrun-agent`: the built-in fleet agent (`planrun agent`) as an executable of its own. The
//! fleet driver starts this one when it sits next to `planrun`, because it starts several times
//! faster: it links none of the analysis code, so the loader has a few thousand relocations to
//! apply instead of the full binary's ~150,000, and 1000 agents start in a fraction of the time.
//! It is also the launcher `bench` stages measure commands through (`bench-launch`), for the
//! same reason: a command forked from a small process has a small peak-RSS floor.

use clap::Parser;

/// The built-in agent the fleet driver spawns (see docs/agent-protocol.md).
#[derive(Parser)]
#[command(name = "planrun-agent", version)]
struct Cli {
    #[command(flatten)]
    args: planrun::drivers::fleet::agent::AgentArgs,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(planrun::drivers::bench::launch::SUBCOMMAND) {
        std::process::exit(planrun::drivers::bench::launch::main(&args[1..]));
    }
    let code = planrun::drivers::fleet::agent::run(Cli::parse().args);
    std::process::exit(if code == 0 { 0 } else { planrun::exit::Exit::Runtime as i32 });
}
