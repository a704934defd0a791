//! Policy syntax: the TOML format, its key tables, and the syntax tree with spans.

pub mod ast;
pub mod parse;
pub mod schema;

pub use parse::parse_file;
