//! Benchmark: parse + compose + lower + lint (`compile_bytes`, what `aegisc validate` does)
//! on the example policies and on generated policies of 1,000 to 10,000 rules, next to
//! the floor set by parsing the same TOML with `toml_edit` alone (the real alternative:
//! a schema-less TOML load). Growth with rule count should be linear.
//!
//! Run: `cargo bench -p aegis-compiler --bench validate`. The generated policies are also
//! written to `$TMPDIR/aegis-bench/rules-N.toml` for whole-process timing with hyperfine:
//! `hyperfine -N --warmup 10 './target/release/aegisc validate /tmp/aegis-bench/rules-10000.toml'`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A realistic policy with `n` rules: 40% filesystem (read/write/deny, absolute and under
/// parameters), 10% exec, 25% network endpoints (names, wildcards, networks, port ranges),
/// 25% HTTP rules spread over 10 APIs (allow and deny).
pub fn generate(n: usize) -> String {
    let fs = n * 40 / 100;
    let exec = n * 10 / 100;
    let net = n * 25 / 100;
    let api = n - fs - exec - net;
    let mut s = String::new();
    let _ = writeln!(s, "version = 1\n\n[agent]\nname = \"generated-{n}\"\ndescription = \"{n} generated rules\"\n");
    s.push_str("[parameters]\nWORKSPACE = \"checkout\"\nDATA = \"datasets\"\nOUT = \"reports\"\n\n[filesystem]\n");
    let (mut read, mut write, mut deny) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..fs {
        match i % 5 {
            0 | 1 => read.push(format!("/srv/data/d{}/part-{i}", i % 97)),
            2 => read.push(format!("${{DATA}}/set-{}/shard-{i}", i % 53)),
            3 => write.push(format!("${{WORKSPACE}}/module-{}/src-{i}", i % 41)),
            _ => deny.push(format!("/srv/data/d{}/part-{}/secrets-{i}", i % 97, i.saturating_sub(4))),
        }
    }
    let list = |v: &[String]| v.iter().map(|p| format!("  \"{p}\",\n")).collect::<String>();
    let _ = write!(s, "read = [\n{}]\nwrite = [\n{}]\ndeny = [\n{}]\n\n", list(&read), list(&write), list(&deny));
    let execs: Vec<String> = (0..exec).map(|i| format!("/opt/tools/bin-{}/tool-{i}", i % 13)).collect();
    let _ = write!(s, "[exec]\nallow = [\n{}]\n\n", list(&execs));
    let endpoints: Vec<String> = (0..net)
        .map(|i| match i % 4 {
            0 => format!("svc-{i}.internal.example.com:443"),
            1 => format!("*.zone-{i}.example.org:443"),
            2 => format!("10.{}.{}.0/24:5432/tcp", (i / 256) % 256, i % 256),
            _ => format!("mirror-{i}.example.net:8000-8080"),
        })
        .collect();
    let _ = write!(s, "[network]\nmode = \"proxy\"\nallow = [\n{}]\n\n", list(&endpoints));
    for a in 0..10 {
        let rules: Vec<String> = (0..api).filter(|i| i % 10 == a).map(|i| format!("GET /v{}/items/{i}/*/details/**", i % 3)).collect();
        let denies: Vec<String> = (0..api).filter(|i| i % 10 == a && i % 7 == 0).map(|i| format!("POST /v1/items/{i}/delete")).collect();
        let _ = write!(
            s,
            "[api.api-{a}]\nhost = \"api-{a}.example.com\"\nscopes = [\"read\", \"write\"]\nallow = [\n{}]\ndeny = [\n{}]\n\n",
            list(&rules),
            list(&denies)
        );
    }
    s.push_str("[resources]\nmemory = \"2GiB\"\npids = 256\ncpu = 2.0\nwall_time = \"1h\"\n");
    s
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    v.sort();
    v
}

fn bench(c: &mut Criterion) {
    let out = std::env::temp_dir().join("aegis-bench");
    let _ = std::fs::create_dir_all(&out);

    let mut g = c.benchmark_group("example");
    for p in examples() {
        let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(&p).unwrap_or_default();
        g.bench_function(BenchmarkId::new("compile", &name), |b| b.iter(|| aegis_compiler::compile_bytes(&name, black_box(&bytes)).is_ok()));
    }
    g.finish();

    let mut g = c.benchmark_group("generated");
    g.sample_size(20);
    for n in [1_000usize, 2_500, 5_000, 10_000] {
        let text = generate(n);
        let _ = std::fs::write(out.join(format!("rules-{n}.toml")), &text);
        let ok = aegis_compiler::compile_bytes("generated.toml", text.as_bytes()).is_ok();
        assert!(ok, "the generated {n}-rule policy must be valid");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("compile", n), &text, |b, t| b.iter(|| aegis_compiler::compile_bytes("generated.toml", black_box(t.as_bytes())).is_ok()));
        g.bench_with_input(BenchmarkId::new("toml_edit_only", n), &text, |b, t| b.iter(|| toml_edit::Document::parse(black_box(t.as_str())).is_ok()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
