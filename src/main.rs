//! The `planrun` binary: everything is in the library (`planrun::cli::main`); this file only
//! picks the allocator (mimalloc: the sink and the analysis allocate many small rows).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The bench launcher's fallback (when planrun-agent is missing): before any other setup.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(planrun::drivers::bench::launch::SUBCOMMAND) {
        std::process::exit(planrun::drivers::bench::launch::main(&args[1..]));
    }
    std::process::exit(planrun::cli::main());
}
