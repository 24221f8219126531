//! Every `--json` document the e2e tests read goes through [`document`]: it must name a schema
//! the packages ship (`docs/schema/`, generated from relay-ops' types) and be valid against
//! it, so that a document and its schema cannot drift apart unnoticed.

use std::path::Path;

/// The JSON Schema file the packages ship for `schema` (`relay-sync.status/1` is
/// `docs/schema/relay-sync.status-1.schema.json`).
pub(crate) fn schema_file(schema: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/schema")
        .join(format!("{}.schema.json", schema.replace('/', "-")))
}

/// `stdout` parsed, after checking that it is one JSON document valid against the schema its
/// `schema` field names.
pub(crate) fn document(stdout: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|error| panic!("not one JSON document ({error}):\n{stdout}"));
    let name = value["schema"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"schema\" field:\n{stdout}"));
    let path = schema_file(name);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{name}: cannot read {}: {error}", path.display())),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|error| panic!("{} is not a valid schema: {error}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "a {name} document that its schema refuses:\n{}\n{stdout}",
        errors.join("\n")
    );
    value
}
