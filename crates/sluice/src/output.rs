//! How the CLI prints: plain-text tables for people, the server's JSON as it is for `--output json`, and the
//! small pieces several commands share (a write's audit trail, progress bars, offsets from a start).

use serde_json::Value;

use crate::cli::Output;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A field as text for a table cell: strings as they are, other values as JSON, missing as empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Prints a list answer: the JSON as it is, or a table with one row per item.
pub fn print_list(output: Output, data: &Value, header: &[&str], row: impl Fn(&Value) -> Vec<String>) {
    match output {
        Output::Json => print_json(data),
        Output::Table => table(header, &data.as_array().into_iter().flatten().map(row).collect::<Vec<_>>()),
    }
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// Prints what a write answered: the audit event(s) it recorded.
pub fn print_written(output: Output, answer: &Value, what: &str) {
    if output == Output::Json {
        return print_json(answer);
    }
    println!("{what}");
    for e in answer["audit"].as_array().into_iter().flatten() {
        println!(
            "  audit #{} {} {} by {}",
            e["seq"],
            e["action"].as_str().unwrap_or(""),
            e["entity"].as_str().unwrap_or(""),
            e["actor"].as_str().unwrap_or("")
        );
    }
}

/// A 20-cell bar filled to `percent`: `█████···············`.
pub fn bar(percent: usize) -> String {
    (0..20).map(|j| if j * 5 < percent { '█' } else { '·' }).collect()
}

/// `+2d 03:04` from the start.
pub fn offset(ms: u64) -> String {
    let m = ms / 60_000;
    let (d, h, min) = (m / 1440, (m % 1440) / 60, m % 60);
    if d > 0 {
        format!("+{d}d {h:02}:{min:02}")
    } else {
        format!("+{h:02}:{min:02}")
    }
}
