//! `template.yaml` against the code: `make tables` and the template describe the same tables
//! (checked by creating the tables with the real `kv-tables` binary in DynamoDB Local and
//! comparing what DynamoDB reports with what the template declares); every function is declared
//! with its binary; the deployment settings, outputs and state machines are as the README says.

use kv_dev::sam;
use kv_dev::sam::{template, text};
use kv_dev::support::*;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// (attribute name, key type) pairs of a key schema.
type KeyPairs = Vec<(String, String)>;

/// A table's shape, in a form both sides can produce.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    attributes: BTreeSet<(String, String)>,
    key: KeyPairs,
    indexes: BTreeSet<(String, KeyPairs, String)>,
    ttl: Option<String>,
    stream: Option<String>,
    billing: String,
}

fn key_pairs(list: &Yaml) -> Vec<(String, String)> {
    list.as_sequence()
        .into_iter()
        .flatten()
        .map(|element| (text(&element["AttributeName"]), text(&element["KeyType"])))
        .collect()
}

fn declared(logical_id: &str) -> Shape {
    let template = template();
    let table = &template["Resources"][logical_id];
    assert_eq!(text(&table["Type"]), "AWS::DynamoDB::Table");
    let properties = &table["Properties"];
    let ttl = &properties["TimeToLiveSpecification"];
    Shape {
        attributes: properties["AttributeDefinitions"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|definition| {
                (
                    text(&definition["AttributeName"]),
                    text(&definition["AttributeType"]),
                )
            })
            .collect(),
        key: key_pairs(&properties["KeySchema"]),
        indexes: properties["GlobalSecondaryIndexes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|index| {
                (
                    text(&index["IndexName"]),
                    key_pairs(&index["KeySchema"]),
                    projection(
                        text(&index["Projection"]["ProjectionType"]),
                        index["Projection"]["NonKeyAttributes"]
                            .as_sequence()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect(),
                    ),
                )
            })
            .collect(),
        ttl: (ttl["Enabled"].as_bool() == Some(true)).then(|| text(&ttl["AttributeName"])),
        stream: properties["StreamSpecification"]["StreamViewType"]
            .as_str()
            .map(str::to_string),
        billing: text(&properties["BillingMode"]),
    }
}

async fn created(table: &str) -> Shape {
    let client = client();
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let table_description = described.table().unwrap();
    let pairs = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        schema
            .iter()
            .map(|element| {
                (
                    element.attribute_name().to_string(),
                    element.key_type().as_str().to_string(),
                )
            })
            .collect()
    };
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let ttl = ttl
        .time_to_live_description()
        .and_then(|ttl| ttl.attribute_name())
        .map(str::to_string);
    Shape {
        attributes: table_description
            .attribute_definitions()
            .iter()
            .map(|definition| {
                (
                    definition.attribute_name().to_string(),
                    definition.attribute_type().as_str().to_string(),
                )
            })
            .collect(),
        key: pairs(table_description.key_schema()),
        indexes: table_description
            .global_secondary_indexes()
            .iter()
            .map(|index| {
                (
                    index.index_name().unwrap_or("").to_string(),
                    pairs(index.key_schema()),
                    projection(
                        index
                            .projection()
                            .and_then(|projection| projection.projection_type())
                            .map(|kind| kind.as_str().to_string())
                            .unwrap_or_default(),
                        index
                            .projection()
                            .map(|projection| projection.non_key_attributes().to_vec())
                            .unwrap_or_default(),
                    ),
                )
            })
            .collect(),
        ttl,
        stream: table_description
            .stream_specification()
            .filter(|stream| stream.stream_enabled())
            .and_then(|stream| stream.stream_view_type())
            .map(|view| view.as_str().to_string()),
        billing: table_description
            .billing_mode_summary()
            .and_then(|summary| summary.billing_mode())
            .map(|mode| mode.as_str().to_string())
            .unwrap_or_default(),
    }
}

fn make_tables(buckets: &str, items: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_kv-tables"))
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("KV_BUCKETS_TABLE", buckets)
        .env("KV_ITEMS_TABLE", items)
        .status()
        .expect("run kv-tables");
    assert!(status.success(), "kv-tables failed");
}

#[tokio::test]
async fn make_tables_creates_what_the_template_declares_and_is_idempotent() {
    let buckets = unique("tables-buckets");
    let items = unique("tables-items");
    make_tables(&buckets, &items);
    make_tables(&buckets, &items);
    assert_eq!(created(&buckets).await, declared("BucketsTable"));
    assert_eq!(created(&items).await, declared("ItemsTable"));
}

#[test]
fn every_function_is_declared_with_its_binary() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let mut binaries = BTreeSet::new();
    for resource in resources.values() {
        if text(&resource["Type"]) == "AWS::Serverless::Function" {
            assert_eq!(
                text(&resource["Metadata"]["BuildMethod"]),
                "rust-cargolambda"
            );
            binaries.insert(text(&resource["Metadata"]["BuildProperties"]["Binary"]));
        }
    }
    let functions: BTreeSet<String> = kv::Function::ALL
        .iter()
        .map(|function| function.name().to_string())
        .collect();
    assert_eq!(binaries, functions);
}

/// `${KvKeyGetFunctionArn}` names `!GetAtt KvKeyGetFunction.Arn`, built from `kv-key-get`: the
/// convention `kv_flow::function_name` (flow/) relies on to invoke a Task's function by name.
fn kebab(camel: &str) -> String {
    let mut out = String::new();
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('-');
        }
        out.push(character.to_ascii_lowercase());
    }
    out
}

/// The `${...}` placeholders a definition uses.
fn placeholders(definition: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = definition;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').expect("closing brace") + start;
        found.insert(rest[start..=end].to_string());
        rest = &rest[end..];
    }
    found
}

#[test]
fn state_machines_declare_every_definition_and_may_invoke_only_its_functions() {
    let template = template();
    let machines = sam::state_machines(&template);
    let binaries = sam::function_binaries(&template);
    let mut declared = BTreeSet::new();
    for machine in &machines {
        let id = &machine.logical_id;
        let path = sam::root().join(&machine.definition);
        let definition = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{id}: DefinitionUri {} not found", machine.definition));
        declared.insert(machine.definition.clone());
        assert_eq!(
            text(&machine.resource["Properties"]["Type"]),
            "STANDARD",
            "{id}"
        );

        // Every placeholder is substituted, and nothing else is.
        let used = placeholders(&definition);
        let substituted: BTreeSet<String> = machine.substitutions.keys().cloned().collect();
        assert_eq!(
            used, substituted,
            "{id}: placeholders vs DefinitionSubstitutions"
        );

        // `${XFunctionArn}` is `!Ref XFunction.Alias` (the alias a canary deployment shifts),
        // and XFunction is built from kebab(X).
        let mut invoked = BTreeSet::new();
        for (placeholder, reference) in &machine.substitutions {
            let name = placeholder
                .strip_prefix("${")
                .and_then(|name| name.strip_suffix("FunctionArn}"))
                .unwrap_or_else(|| {
                    panic!("{id}: {placeholder} must be ${{<Function>FunctionArn}}")
                });
            let logical = format!("{name}Function");
            assert_eq!(
                reference,
                &sam::Intrinsic::Ref(format!("{logical}.Alias")),
                "{id}: {placeholder}"
            );
            assert_eq!(
                binaries.get(&logical),
                Some(&kebab(name)),
                "{id}: {logical} must be built from {}",
                kebab(name)
            );
            invoked.insert(("lambda:InvokeFunction".to_string(), logical));
        }

        // Least privilege: invoke exactly the functions its Tasks call.
        assert_eq!(sam::allowed(&machine.resource), invoked, "{id}: policy");
    }

    let on_disk: BTreeSet<String> = std::fs::read_dir(sam::root().join("statemachines"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".asl.json"))
        .map(|name| format!("statemachines/{name}"))
        .collect();
    assert_eq!(
        declared, on_disk,
        "every definition is a state machine of the template"
    );
}

#[test]
fn deployment_settings_follow_the_readme() {
    let template = template();
    let function = &template["Globals"]["Function"];
    assert_eq!(text(&function["Runtime"]), "provided.al2023");
    assert_eq!(text(&function["Handler"]), "bootstrap");
    assert_eq!(
        function["Architectures"],
        serde_yaml::from_str::<Yaml>("[arm64]").unwrap()
    );
    assert_eq!(text(&function["LoggingConfig"]["LogFormat"]), "JSON");
    let memory = function["MemorySize"].as_u64().expect("MemorySize");
    let timeout = function["Timeout"].as_u64().expect("Timeout");
    let readme = std::fs::read_to_string(sam::root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("{memory} MB")) && readme.contains(&format!("{timeout} s")),
        "the README justifies MemorySize {memory} and Timeout {timeout}"
    );

    // `sam deploy --guided` alone: no parameter without a default.
    for (name, parameter) in template["Parameters"].as_mapping().into_iter().flatten() {
        assert!(
            !parameter["Default"].is_null(),
            "parameter {name:?} has no Default"
        );
    }

    for (id, resource) in sam::resources(&template, "AWS::Serverless::Function") {
        let metadata = &resource["Metadata"];
        assert_eq!(text(&metadata["BuildMethod"]), "rust-cargolambda", "{id}");
        assert!(
            !text(&metadata["BuildProperties"]["Binary"]).is_empty(),
            "{id}"
        );
    }
    for (id, table) in sam::resources(&template, "AWS::DynamoDB::Table") {
        let properties = &table["Properties"];
        assert_eq!(text(&properties["BillingMode"]), "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            Yaml::Bool(true),
            "{id}"
        );
    }
    let items = &template["Resources"]["ItemsTable"]["Properties"];
    assert_eq!(
        items["TimeToLiveSpecification"]["Enabled"],
        Yaml::Bool(true)
    );
    assert!(items["StreamSpecification"]["StreamViewType"].is_string());
}

#[test]
fn outputs_give_every_arn() {
    let template = template();
    let outputs: BTreeSet<(String, String)> = template["Outputs"]
        .as_mapping()
        .expect("Outputs")
        .values()
        .filter_map(|output| match sam::intrinsic(&output["Value"]) {
            Some(sam::Intrinsic::GetAtt(resource, attribute)) => Some((resource, attribute)),
            Some(sam::Intrinsic::Ref(resource)) => Some((resource, "Ref".into())),
            _ => None,
        })
        .collect();
    let mut expected = BTreeMap::new();
    for (id, _) in sam::resources(&template, "AWS::Serverless::Function") {
        expected.insert((id, "Arn".to_string()), ());
    }
    for (id, table) in sam::resources(&template, "AWS::DynamoDB::Table") {
        if !table["Properties"]["StreamSpecification"].is_null() {
            expected.insert((id.clone(), "StreamArn".to_string()), ());
        }
        expected.insert((id, "Arn".to_string()), ());
    }
    for (id, _) in sam::resources(&template, "AWS::Serverless::StateMachine") {
        // `Ref` of a state machine is its ARN.
        expected.insert((id, "Ref".to_string()), ());
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|wanted| !outputs.contains(*wanted))
        .collect();
    assert!(missing.is_empty(), "no output for {missing:?}");
}

/// An index's projection as one comparable text: its type and the attributes it includes.
fn projection(kind: String, mut non_key: Vec<String>) -> String {
    non_key.sort();
    format!("{kind} {}", non_key.join(","))
}
