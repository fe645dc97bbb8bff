//! Reading the functions' metric records (CloudWatch Embedded Metric Format) as CloudWatch
//! would: what the tests check every record against.

use serde_json::Value;

/// The units CloudWatch accepts that the functions use.
const UNITS: [&str; 2] = ["Count", "Milliseconds"];

/// Whether `line` is a metric record (a JSON object with the `_aws` metadata).
pub fn parse(line: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(line).ok()?;
    value.get("_aws").is_some().then_some(value)
}

/// What makes `record` something CloudWatch would not extract metrics from, if anything: the
/// metadata's shape, every dimension a string member, every metric a number member.
pub fn problems(record: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let meta = &record["_aws"];
    if !meta["Timestamp"].is_u64() {
        problems.push(format!(
            "Timestamp is not epoch milliseconds: {}",
            meta["Timestamp"]
        ));
    }
    let Some(directives) = meta["CloudWatchMetrics"]
        .as_array()
        .filter(|list| !list.is_empty())
    else {
        problems.push("no CloudWatchMetrics".into());
        return problems;
    };
    for directive in directives {
        if !directive["Namespace"].is_string() {
            problems.push(format!("a directive without a namespace: {directive}"));
        }
        for set in directive["Dimensions"].as_array().into_iter().flatten() {
            for name in set.as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !record[name].is_string() {
                    problems.push(format!("dimension {name} is not a string member"));
                }
            }
        }
        let metrics = directive["Metrics"].as_array().cloned().unwrap_or_default();
        if metrics.is_empty() || metrics.len() > 100 {
            problems.push(format!("a directive with {} metrics", metrics.len()));
        }
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap_or_default();
            if !record[name].is_number() {
                problems.push(format!("metric {name} is not a number member"));
            }
            if !UNITS.contains(&metric["Unit"].as_str().unwrap_or_default()) {
                problems.push(format!("metric {name} has unit {}", metric["Unit"]));
            }
        }
    }
    problems
}

/// The names of a record's dimensions and of its metrics, by namespace.
pub fn declared(record: &Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut declared = Vec::new();
    for directive in record["_aws"]["CloudWatchMetrics"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let namespace = directive["Namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let metrics: Vec<String> = directive["Metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|metric| metric["Name"].as_str().map(str::to_string))
            .collect();
        for set in directive["Dimensions"].as_array().into_iter().flatten() {
            let set: Vec<String> = set
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|name| name.as_str().map(str::to_string))
                .collect();
            declared.push((namespace.clone(), set, metrics.clone()));
        }
    }
    declared
}
