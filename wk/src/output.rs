//! Printing helpers shared by the client commands: errors like kubectl's, tables.

use serde_json::Value;
use wk_client::ClientError;

/// Prints an error chain as one clear line (kubectl's format for server errors).
pub fn print_error(e: &anyhow::Error) {
    if let Some(ClientError::Api(s)) = e.downcast_ref::<ClientError>() {
        eprintln!("{}", api_error_line(s));
        return;
    }
    let mut line = format!("error: {e}");
    for cause in e.chain().skip(1) {
        line.push_str(&format!(": {cause}"));
    }
    eprintln!("{line}");
}

/// `Error from server (NotFound): pods "x" not found`
pub fn api_error_line(s: &wk_api::Status) -> String {
    if s.reason == "Invalid" {
        format!("The {}", s.message)
    } else if s.reason.is_empty() {
        format!("Error from server: {}", s.message)
    } else {
        format!("Error from server ({}): {}", s.reason, s.message)
    }
}

/// Prints a `meta.k8s.io/v1` Table like kubectl: upper-case headers, columns padded.
/// `wide` includes priority > 0 columns; `namespace` prefixes a NAMESPACE column.
pub fn print_table(table: &Value, wide: bool, with_namespace: bool, headers: bool) -> usize {
    let defs = table
        .get("columnDefinitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let keep: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| wide || d.get("priority").and_then(Value::as_u64).unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    if headers {
        let mut h: Vec<String> = Vec::new();
        if with_namespace {
            h.push("NAMESPACE".into());
        }
        h.extend(keep.iter().map(|i| {
            defs[*i]
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_uppercase()
        }));
        rows.push(h);
    }
    let data = table
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in &data {
        let cells = r
            .get("cells")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut line = Vec::new();
        if with_namespace {
            line.push(
                r.pointer("/object/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
        for i in &keep {
            line.push(match cells.get(*i) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            });
        }
        rows.push(line);
    }
    print_rows(&rows);
    data.len()
}

/// Prints rows with columns padded to their widest cell (3 spaces apart, like kubectl).
pub fn print_rows(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `deployment.apps/web` for messages.
pub fn object_ref(rt: &wk_api::ResourceType, name: &str) -> String {
    if rt.group.is_empty() {
        format!("{}/{name}", rt.singular)
    } else {
        format!("{}.{}/{name}", rt.singular, rt.group)
    }
}
