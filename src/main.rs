//! The `planrun` binary: everything is in the library (`planrun::cli::main`); this file only
//! picks the allocator (mimalloc: the sink and the analysis allocate many small rows).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(planrun::cli::main());
}
