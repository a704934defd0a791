//! `aegis-audit prove LOG (--seq N | --consistency M) [--size S]`: Merkle proofs (RFC 6962) over
//! the record hashes of a log, printed as one JSON object, for a third party who holds a signed
//! checkpoint (its `records` is the tree size, its `root` the tree head).

use std::path::PathBuf;

use aegis_audit::merkle::{consistency_proof, inclusion_proof, root};
use aegis_audit::{read_record_hashes, to_hex};

use super::CliError;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["seq", "consistency"])))]
pub struct Args {
    /// The log file (verify it first).
    log: PathBuf,
    /// Inclusion proof of the record with this seq.
    #[arg(long)]
    seq: Option<u64>,
    /// Consistency proof from the tree of this many records.
    #[arg(long)]
    consistency: Option<u64>,
    /// Tree size (records) the proof is for; default: every complete record.
    #[arg(long)]
    size: Option<u64>,
}

pub fn run(a: Args) -> Result<u8, CliError> {
    let hashes = read_record_hashes(&a.log)?;
    let size = a.size.unwrap_or(hashes.len() as u64);
    let n = usize::try_from(size).map_err(|_| CliError::Input("--size too large".into()))?;
    let Some(leaves) = hashes.get(..n) else {
        return Err(CliError::Input(format!(
            "--size {size}: the log has only {} records",
            hashes.len()
        )));
    };
    let hexes = |v: Vec<[u8; 32]>| v.iter().map(to_hex).collect::<Vec<_>>();
    let out = if let Some(seq) = a.seq {
        let i = usize::try_from(seq).unwrap_or(usize::MAX);
        let proof = inclusion_proof(leaves, i).ok_or_else(|| {
            CliError::Input(format!("--seq {seq} is not below the tree size {size}"))
        })?;
        serde_json::json!({
            "type": "inclusion", "seq": seq, "size": size,
            "record_hash": leaves.get(i).map(to_hex), "root": to_hex(&root(leaves)), "path": hexes(proof),
        })
    } else {
        let m = a.consistency.unwrap_or(0);
        let mi = usize::try_from(m).unwrap_or(usize::MAX);
        let proof = consistency_proof(leaves, mi).ok_or_else(|| {
            CliError::Input(format!(
                "--consistency {m} must be between 1 and the tree size {size}"
            ))
        })?;
        serde_json::json!({
            "type": "consistency", "first": m, "size": size,
            "first_root": to_hex(&root(leaves.get(..mi).unwrap_or_default())), "root": to_hex(&root(leaves)), "path": hexes(proof),
        })
    };
    println!("{out}");
    Ok(0)
}
