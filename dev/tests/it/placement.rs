//! `num_replicas` and `placement` against what the deployment gives (its `Settings`, from the
//! template's `ReplicaRegions`, `ClusterName` and `PlacementTags`): kv-bucket-create refuses what
//! it cannot give before writing anything, records what it can, and kv-bucket-info shows where
//! the bucket's items are.

use kv::model::config::Settings;
use kv::Function::{BucketCreate, BucketInfo};
use kv::Kv;
use kv_dev::support::*;
use serde_json::{json, Value};

/// A container of a deployment with one replica region, a named cluster and two tags.
fn global_container() -> Kv {
    Kv::new(
        client(),
        &Settings {
            replica_regions: vec!["eu-west-1".into()],
            cluster: "east".into(),
            placement_tags: vec!["ssd".into(), "fast".into()],
            ..settings()
        },
    )
}

fn message(response: &Value) -> &str {
    response["body"]["error"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_home_region_deployment_refuses_what_it_cannot_give_and_writes_nothing() {
    let kv = container();
    let name = unique("replicas");
    let refused = call(
        &kv,
        BucketCreate,
        json!({"bucket": name, "num_replicas": 4}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
    assert_eq!(
        message(&refused),
        "num_replicas 4 needs a global table in 2 regions; this deployment keeps 3 copies in us-east-1 only (set the ReplicaRegions parameter)"
    );
    let refused = call(
        &kv,
        BucketCreate,
        json!({"bucket": name, "placement": {"cluster": "east", "tags": ["ssd"]}}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
    assert!(
        message(&refused).contains("'east'") && message(&refused).contains("'us-east-1'"),
        "{refused}"
    );
    let refused = call(
        &kv,
        BucketCreate,
        json!({"bucket": name, "placement": {"tags": ["ssd"]}}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
    assert!(
        message(&refused).contains("'ssd'") && message(&refused).contains("no placement tags"),
        "{refused}"
    );
    // Nothing was written: the bucket does not exist.
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": name})).await,
        404,
        "bucket_not_found",
    );

    // Up to three replicas is what one region gives, and the cluster is the region.
    let created = call(
        &kv,
        BucketCreate,
        json!({"bucket": name, "num_replicas": 3, "placement": {"cluster": "us-east-1"}}),
    )
    .await;
    assert_eq!(status(&created), 200, "{created}");
    let info = call(&kv, BucketInfo, json!({"bucket": name})).await;
    assert_eq!(status(&info), 200, "{info}");
    assert_eq!(
        info["body"]["body"]["replication"],
        json!({"num_replicas": 3, "copies": 3, "regions": ["us-east-1"],
               "cluster": "us-east-1", "tags": []})
    );
}

#[tokio::test]
async fn a_global_deployment_gives_five_replicas_and_its_placement() {
    let kv = global_container();
    let name = unique("global");
    let created = call(
        &kv,
        BucketCreate,
        json!({"bucket": name, "num_replicas": 5,
               "placement": {"cluster": "east", "tags": ["SSD", "fast"]}}),
    )
    .await;
    assert_eq!(status(&created), 200, "{created}");
    // Recorded as asked.
    assert_eq!(created["body"]["config"]["num_replicas"], 5);
    assert_eq!(
        created["body"]["config"]["placement"],
        json!({"cluster": "east", "tags": ["SSD", "fast"]})
    );
    let info = call(&kv, BucketInfo, json!({"bucket": name})).await;
    assert_eq!(status(&info), 200, "{info}");
    assert_eq!(info["body"]["body"]["config"]["num_replicas"], 5);
    assert_eq!(
        info["body"]["body"]["replication"],
        json!({"num_replicas": 5, "copies": 6, "regions": ["us-east-1", "eu-west-1"],
               "cluster": "east", "tags": ["ssd", "fast"]})
    );

    let refused = call(
        &kv,
        BucketCreate,
        json!({"bucket": unique("global"), "placement": {"cluster": "west", "tags": ["gpu"]}}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
    assert_eq!(
        message(&refused),
        "placement.cluster 'west' is not available: this deployment is cluster 'east' (the ClusterName parameter)"
    );
    let refused = call(
        &kv,
        BucketCreate,
        json!({"bucket": unique("global"), "placement": {"tags": ["ssd", "gpu"]}}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
    assert_eq!(
        message(&refused),
        "placement.tags 'gpu' is not available: this deployment's tags are 'ssd', 'fast' (the PlacementTags parameter)"
    );
}
