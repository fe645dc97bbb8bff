//! What operates the stack (SPEC "Operations"), checked on `template.yaml` against the code:
//! every alarm and dashboard widget on the functions' own metrics names one the code emits,
//! under the namespace and dimensions it emits it with (`kv::lambda::metrics`); every stream
//! mapping, failure queue, function and table has its alarms; the functions flows call deploy
//! gradually, rolled back on alarms; logs are kept for a while; tables are protected.

use kv::lambda::metrics::{figures, FIGURE_DIMENSIONS, FUNCTION, LATENCY, LATENCY_DIMENSIONS};
use kv::Function;
use kv_dev::sam;
use kv_dev::sam::{template, text, Intrinsic};
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;

/// The namespace the template gives each stack (`KV_METRICS_NAMESPACE`).
const STACK_NAMESPACE: &str = "KeyValue/${AWS::StackName}";

fn function_named(binary: &str) -> Option<Function> {
    Function::ALL
        .into_iter()
        .find(|function| function.name() == binary)
}

/// Whether the code emits `metric` with exactly the dimensions `names`, for the function a
/// `Function` dimension names (any, when none does).
fn emitted(metric: &str, names: &[String], function: Option<&str>) -> bool {
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let sets: &[&[&str]] = if metric == LATENCY {
        &LATENCY_DIMENSIONS
    } else {
        &FIGURE_DIMENSIONS
    };
    let with_dimensions = sets
        .iter()
        .any(|set| set.iter().copied().collect::<BTreeSet<_>>() == wanted);
    let functions: Vec<Function> = match function {
        Some(binary) => function_named(binary).into_iter().collect(),
        None => Function::ALL.to_vec(),
    };
    with_dimensions
        && functions.iter().any(|function| {
            metric == LATENCY
                || figures(*function)
                    .iter()
                    .any(|figure| figure.name == metric)
        })
}

/// The metric statements of an alarm: its own, or those of its `Metrics` list.
fn alarm_metrics(alarm: &Yaml) -> Vec<Yaml> {
    let properties = &alarm["Properties"];
    if properties["MetricName"].is_string() {
        return vec![properties.clone()];
    }
    properties["Metrics"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|metric| !metric["MetricStat"].is_null())
        .map(|metric| metric["MetricStat"]["Metric"].clone())
        .collect()
}

fn dimension(metric: &Yaml, name: &str) -> Option<Yaml> {
    metric["Dimensions"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|dimension| text(&dimension["Name"]) == name)
        .map(|dimension| dimension["Value"].clone())
}

fn namespace(metric: &Yaml) -> String {
    match sam::intrinsic(&metric["Namespace"]) {
        Some(Intrinsic::Sub(pattern)) => pattern,
        _ => text(&metric["Namespace"]),
    }
}

/// The resource a `!Ref X` or `!GetAtt X.Attribute` names.
fn referenced(value: &Yaml) -> Option<String> {
    match sam::intrinsic(value)? {
        Intrinsic::Ref(resource) | Intrinsic::GetAtt(resource, _) => Some(resource),
        Intrinsic::Sub(_) => None,
    }
}

#[test]
fn alarms_and_the_dashboard_watch_what_the_code_emits_and_cover_every_part() {
    let template = template();
    let alarms = sam::resources(&template, "AWS::CloudWatch::Alarm");
    let mut problems = Vec::new();
    // (namespace, metric, resource its dimension names)
    let mut watched: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (id, alarm) in &alarms {
        let properties = &alarm["Properties"];
        for field in ["AlarmActions", "OKActions", "AlarmDescription"] {
            if properties[field].is_null() {
                problems.push(format!("{id} has no {field}"));
            }
        }
        for metric in alarm_metrics(alarm) {
            let (namespace, name) = (namespace(&metric), text(&metric["MetricName"]));
            if namespace == STACK_NAMESPACE {
                let names: Vec<String> = metric["Dimensions"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|dimension| text(&dimension["Name"]))
                    .collect();
                let function = dimension(&metric, FUNCTION).map(|value| text(&value));
                if !emitted(&name, &names, function.as_deref()) {
                    problems.push(format!(
                        "{id} watches {name} by {names:?} for {function:?}, which the code does not emit"
                    ));
                }
            } else if !namespace.starts_with("AWS/") {
                problems.push(format!("{id} watches namespace {namespace}"));
            }
            let target = metric["Dimensions"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|dimension| referenced(&dimension["Value"]))
                .next()
                .unwrap_or_default();
            watched.insert((namespace, name, target));
        }
    }
    let watches = |namespace: &str, metric: &str, resource: &str| {
        watched.contains(&(namespace.into(), metric.into(), resource.into()))
    };
    for (id, function) in sam::resources(&template, "AWS::Serverless::Function") {
        for metric in ["Errors", "Throttles"] {
            if !watches("AWS/Lambda", metric, &id) {
                problems.push(format!("no alarm on {id}'s {metric}"));
            }
        }
        let streams = function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .any(|(_, event)| text(&event["Type"]) == "DynamoDB");
        if streams && !watches("AWS/Lambda", "IteratorAge", &id) {
            problems.push(format!("no IteratorAge alarm on {id}'s stream mapping"));
        }
        let group = referenced(&function["Properties"]["LoggingConfig"]["LogGroup"]);
        let retained = group.as_ref().is_some_and(|group| {
            !template["Resources"][group]["Properties"]["RetentionInDays"].is_null()
        });
        if !retained {
            problems.push(format!("{id} logs to no log group with a retention"));
        }
    }
    for (id, _) in sam::resources(&template, "AWS::SQS::Queue") {
        if !watches("AWS/SQS", "ApproximateNumberOfMessagesVisible", &id) {
            problems.push(format!("no depth alarm on {id}"));
        }
    }
    for (id, table) in sam::resources(&template, "AWS::DynamoDB::Table") {
        for metric in ["ReadThrottleEvents", "WriteThrottleEvents", "SystemErrors"] {
            if !watches("AWS/DynamoDB", metric, &id) {
                problems.push(format!("no alarm on {id}'s {metric}"));
            }
        }
        let properties = &table["Properties"];
        if properties["DeletionProtectionEnabled"] != Yaml::Bool(true) {
            problems.push(format!("{id} has no deletion protection"));
        }
        if properties["SSESpecification"]["KMSMasterKeyId"].is_null() {
            problems.push(format!("{id} cannot take a customer-managed key"));
        }
    }
    for (namespace, metric, function) in [
        (STACK_NAMESPACE, "RecordsSetAside", ""),
        (STACK_NAMESPACE, LATENCY, ""),
        (STACK_NAMESPACE, "ExpiryLateness", ""),
    ] {
        if !watches(namespace, metric, function) {
            problems.push(format!("no alarm on {metric}"));
        }
    }

    // The functions that state machines invoke deploy gradually, rolled back on alarms.
    let invoked: BTreeSet<String> = sam::state_machines(&template)
        .iter()
        .flat_map(|machine| machine.substitutions.values().cloned().collect::<Vec<_>>())
        .filter_map(|reference| match reference {
            Intrinsic::Ref(alias) => alias.strip_suffix(".Alias").map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(!invoked.is_empty(), "state machines invoke aliases");
    for id in &invoked {
        let properties = &template["Resources"][id.as_str()]["Properties"];
        if properties["AutoPublishAlias"].is_null() {
            problems.push(format!("{id} has no alias for a canary"));
        }
        let alarms: Vec<String> = properties["DeploymentPreference"]["Alarms"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(referenced)
            .collect();
        if alarms.is_empty()
            || alarms
                .iter()
                .any(|alarm| template["Resources"][alarm.as_str()].is_null())
        {
            problems.push(format!(
                "{id} deploys without alarms to roll back on: {alarms:?}"
            ));
        }
    }

    // The dashboard's widgets search the stack's namespace for metrics the code emits.
    let dashboards = sam::resources(&template, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let body = match sam::intrinsic(&dashboards[0].1["Properties"]["DashboardBody"]) {
        Some(Intrinsic::Sub(body)) => body,
        other => panic!("DashboardBody is !Sub of the JSON: {other:?}"),
    };
    let body: serde_json::Value = serde_json::from_str(&body).expect("the dashboard is JSON");
    for widget in body["widgets"].as_array().expect("widgets") {
        for line in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let expression = line[0]["expression"].as_str().unwrap_or_default();
            // SEARCH('{NAMESPACE,DIMENSION...} MetricName="..."', ...)
            let inside = expression
                .strip_prefix("SEARCH('{")
                .and_then(|rest| rest.split_once("} "))
                .map(|(schema, _)| schema.to_string())
                .unwrap_or_default();
            let mut schema = inside.split(',').map(str::to_string);
            let namespace = schema.next().unwrap_or_default();
            let names: Vec<String> = schema.collect();
            let metric = expression
                .split_once("MetricName=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(metric, _)| metric)
                .unwrap_or_default();
            if namespace != STACK_NAMESPACE || !emitted(metric, &names, None) {
                problems.push(format!(
                    "dashboard widget on {expression}, which the code does not emit"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
