//! What the JSON Schemas of the `--json` documents share: the types of [`crate::json`] and
//! those they embed from other modules (the check report) are generated with these transforms.

/// A schema transform: every field of the document is required, `null` where its type says
/// so. relay-sync writes every field; serde's default, which schemars follows, would let a
/// reader think an `Option` field may be missing.
pub(crate) fn every_field_required(schema: &mut schemars::Schema) {
    let names: Vec<serde_json::Value> = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|properties| properties.keys().cloned().map(Into::into).collect())
        .unwrap_or_default();
    schema.insert("required".to_owned(), names.into());
}
