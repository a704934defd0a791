#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
//! The panic policy, for real: this test binary (no libtest harness, so its main thread is
//! a binary's main thread) re-runs itself with `AEGIS_PANIC_TEST` set to one scenario, under
//! `aegis_panic::main`, and checks what a user would see (stderr, exit status).

use std::process::{Command, ExitCode};

fn scenario(name: &str) -> ExitCode {
    aegis_panic::main("tool", 3, || match name {
        "main" => panic!("boom: {}\nsecond line of a long message", "x".repeat(1000)),
        "thread" => {
            let t = std::thread::Builder::new().name("worker".into()).spawn(|| panic!("worker failed")).unwrap();
            assert!(t.join().is_err());
            ExitCode::from(0)
        }
        "index" => {
            let v: Vec<u8> = Vec::new();
            let i = std::hint::black_box(7);
            ExitCode::from(v[i])
        }
        _ => ExitCode::from(0),
    })
}

fn run(name: &str) -> (i32, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("AEGIS_PANIC_TEST", name)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

fn main() -> ExitCode {
    if let Ok(name) = std::env::var("AEGIS_PANIC_TEST") {
        return scenario(&name);
    }
    a_panic_in_main_is_one_line_and_the_internal_error_code();
    a_panic_in_a_dependency_of_std_is_caught_the_same_way();
    a_panic_in_another_thread_ends_that_thread_only();
    println!("test result: ok. 3 passed");
    ExitCode::SUCCESS
}

fn a_panic_in_main_is_one_line_and_the_internal_error_code() {
    let (code, err) = run("main");
    assert_eq!(code, 3, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("tool:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    let l = lines[0];
    assert!(l.starts_with("tool: internal error: boom: xxx") && l.contains("…") && l.contains("one_line.rs:"), "{l}");
    assert!(l.len() < 500, "the message is cut: {} bytes", l.len());
    assert!(!err.contains("stack backtrace") && !err.contains("panicked at") && !err.contains("second line"), "{err}");
}

fn a_panic_in_a_dependency_of_std_is_caught_the_same_way() {
    let (code, err) = run("index");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("tool: internal error: index out of bounds"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

fn a_panic_in_another_thread_ends_that_thread_only() {
    let (code, err) = run("thread");
    assert_eq!(code, 0, "the process goes on: {err}");
    assert!(err.contains("tool: internal error in thread worker: worker failed"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}
