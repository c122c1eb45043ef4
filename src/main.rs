fn main() {
    std::process::exit(planrun::cli::main());
}
