//! `aegisc`: the AEGIS policy compiler. All logic lives in the library (`cli` module).

fn main() -> std::process::ExitCode {
    aegis_compiler::cli::main()
}
