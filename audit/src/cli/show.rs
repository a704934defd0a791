//! `aegis-audit show` and `aegis-audit tail [-f]`: print records that pass a filter, as a table
//! or as the stored JSON lines. Lines that are not valid records are reported on stderr and
//! skipped; nothing here verifies the chain.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aegis_audit::show::{Filter, table_header, table_row};
use aegis_audit::{Record, Timestamp, Verdict};

use super::{CliError, Format};

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only this event kind (decision, kernel_denial, agent_exited, checkpoint, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only records at or after this time (YYYY-MM-DD, RFC 3339 UTC ...Z, or epoch seconds).
    #[arg(long)]
    since: Option<String>,
    /// Only records before this time.
    #[arg(long)]
    until: Option<String>,
    /// Only decisions with this verdict.
    #[arg(long, value_parser = ["allow", "deny"])]
    decision: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The log file.
    log: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The log file.
    log: PathBuf,
    /// Keep running and print records as they are appended.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many of the last matching records to print first.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: usize,
    #[command(flatten)]
    filter: FilterArgs,
}

fn parse_time(flag: &str, v: Option<&String>) -> Result<Option<Timestamp>, CliError> {
    v.map(|s| {
        Timestamp::parse_loose(s).ok_or_else(|| {
            CliError::Input(format!(
                "{flag} {s:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS[.frac]Z or epoch seconds"
            ))
        })
    })
    .transpose()
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter, CliError> {
        Ok(Filter {
            agent: self.agent.clone(),
            kind: self.kind.clone(),
            since: parse_time("--since", self.since.as_ref())?,
            until: parse_time("--until", self.until.as_ref())?,
            decision: self.decision.as_deref().map(|d| {
                if d == "allow" {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            }),
        })
    }
}

struct Printer {
    filter: Filter,
    format: Format,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    /// Render one line if it passes; returns the text (with newline) or `None`.
    fn render(&self, line: &[u8], line_no: u64) -> Option<String> {
        match Record::parse(line) {
            Ok(rec) if self.filter.matches(&rec) => Some(match self.format {
                Format::Table => table_row(&rec) + "\n",
                Format::Json => String::from_utf8_lossy(line).into_owned() + "\n",
            }),
            Ok(_) => None,
            Err(e) => {
                eprintln!("aegis-audit: line {line_no}: not a valid record ({e}); skipped");
                None
            }
        }
    }

    fn emit(&mut self, s: &str) -> Result<(), CliError> {
        self.out
            .write_all(s.as_bytes())
            .map_err(|e| CliError::Internal(format!("writing output: {e}")))
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.out
            .flush()
            .map_err(|e| CliError::Internal(format!("writing output: {e}")))
    }
}

fn open(path: &Path) -> Result<File, CliError> {
    File::open(path).map_err(|e| CliError::Input(format!("opening log {}: {e}", path.display())))
}

fn printer(f: &FilterArgs) -> Result<Printer, CliError> {
    let mut p = Printer {
        filter: f.filter()?,
        format: f.format,
        out: std::io::BufWriter::new(std::io::stdout()),
    };
    if p.format == Format::Table {
        p.emit(&(table_header() + "\n"))?;
    }
    Ok(p)
}

/// Read complete lines from `r`, calling `each(line, line_no)`; returns bytes consumed (the
/// partial last line, if any, is left for later).
fn for_lines(
    r: impl Read,
    first_line: u64,
    mut each: impl FnMut(&[u8], u64) -> Result<(), CliError>,
) -> Result<u64, CliError> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut line = Vec::new();
    let (mut consumed, mut no) = (0u64, first_line);
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::Input(format!("reading log: {e}")))?;
        let Some(body) = line.strip_suffix(b"\n") else {
            break;
        };
        each(body, no)?;
        consumed += n as u64;
        no += 1;
    }
    Ok(consumed)
}

pub fn run_show(a: ShowArgs) -> Result<u8, CliError> {
    let mut p = printer(&a.filter)?;
    let file = open(&a.log)?;
    for_lines(file, 1, |line, no| match p.render(line, no) {
        Some(s) => p.emit(&s),
        None => Ok(()),
    })?;
    p.flush()?;
    Ok(0)
}

pub fn run_tail(a: TailArgs) -> Result<u8, CliError> {
    let mut p = printer(&a.filter)?;
    let file = open(&a.log)?;
    let mut last: VecDeque<String> = VecDeque::with_capacity(a.lines + 1);
    let mut line_no = 1u64;
    let mut pos = for_lines(file, 1, |line, no| {
        line_no = no + 1;
        if let Some(s) = p.render(line, no) {
            last.push_back(s);
            if last.len() > a.lines {
                last.pop_front();
            }
        }
        Ok(())
    })?;
    for s in last {
        p.emit(&s)?;
    }
    p.flush()?;
    if !a.follow {
        return Ok(0);
    }
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut f = open(&a.log)?;
        let len = f
            .metadata()
            .map_err(|e| CliError::Input(format!("stat of log: {e}")))?
            .len();
        if len < pos {
            eprintln!(
                "aegis-audit: {} shrank from {pos} to {len} bytes (truncated or replaced); following from its start",
                a.log.display()
            );
            pos = 0;
            line_no = 1;
        }
        if len == pos {
            continue;
        }
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| CliError::Input(format!("seeking log: {e}")))?;
        let start_no = line_no;
        let consumed = for_lines(f.take(len - pos), start_no, |line, no| {
            line_no = no + 1;
            match p.render(line, no) {
                Some(s) => p.emit(&s),
                None => Ok(()),
            }
        })?;
        pos += consumed;
        p.flush()?;
    }
}
