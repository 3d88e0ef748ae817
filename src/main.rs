fn main() -> std::process::ExitCode {
    acr_broker::cli::main()
}
