//! `template.yaml` and `make tables` must describe the same tables: checked by creating the
//! tables with the real `kv-tables` binary in DynamoDB Local and comparing what DynamoDB
//! reports with what the template declares.

mod support;

use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::process::Command;
use support::*;

fn template() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("template.yaml"))
        .expect("valid YAML")
}

fn text(value: &Yaml) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{value:?}"))
}

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
                    text(&index["Projection"]["ProjectionType"]),
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
                    index
                        .projection()
                        .and_then(|projection| projection.projection_type())
                        .map(|kind| kind.as_str().to_string())
                        .unwrap_or_default(),
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
