//! `aegisc`: the AEGIS policy compiler. All logic lives in the library (`cli` module).

fn main() -> std::process::ExitCode {
    aegis_panic::die_on_broken_pipe();
    // A panic (dependencies included) is one line and exit 3, never a backtrace.
    aegis_panic::main("aegisc", 3, aegis_compiler::cli::main)
}
