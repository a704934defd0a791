//! `aegisc schema`: the JSON Schema of the policy format, for editors.

use super::{Exit, print_json};

pub fn run() -> Exit {
    print_json(&crate::syntax::schema::json_schema());
    Exit::Ok
}
