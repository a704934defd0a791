//! Canonical JSON: the one byte encoding of a JSON value that AEGIS signs and hashes.
//!
//! Input: any `serde::Serialize` value without floating-point numbers. Output: its
//! canonical bytes: UTF-8; object keys sorted by their UTF-8 bytes; no whitespace between
//! tokens; strings escaped exactly as `serde_json` does (only `"`, `\` and U+0000-U+001F,
//! using `\b \f \n \r \t` or `\u00xx` with lower-case hex; everything else literal);
//! integers in shortest decimal form; one `\n` after the value.
//! Invariants: equal values give equal bytes; decoding and re-encoding canonical bytes gives
//! the same bytes, which is how readers reject a non-canonical manifest.

use serde::Serialize;
use serde_json::Value;

/// Encodes `value` canonically (see the module docs).
pub fn to_canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let v = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(1024);
    write_value(&v, &mut out)?;
    out.push(b'\n');
    Ok(out)
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Floats have several spellings; the manifest has none, so refuse them.
            if !(n.is_u64() || n.is_i64()) {
                return Err(format!("non-integer number {n} has no canonical form"));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => {
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())?;
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // The workspace enables serde_json's `preserve_order`, so sort explicitly.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).map_err(|e| e.to_string())?;
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_and_escapes_like_serde_json() {
        let v = serde_json::json!({"b": 1, "a": [true, null, "x\"\n\u{1}é"], "A": {"z": 0, "y": -3}});
        let bytes = to_canonical_json(&v).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "{\"A\":{\"y\":-3,\"z\":0},\"a\":[true,null,\"x\\\"\\n\\u0001é\"],\"b\":1}\n"
        );
    }

    #[test]
    fn refuses_floats() {
        assert!(to_canonical_json(&serde_json::json!({"f": 1.5})).is_err());
    }
}
