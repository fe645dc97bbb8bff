//! What a bucket's `num_replicas` and `placement` mean on DynamoDB, and whether this deployment
//! can give them.
//!
//! DynamoDB keeps every item in three copies, in three availability zones of its region, and a
//! global table keeps that in each of its regions. So a deployment holds `3 × regions` copies,
//! where the regions are the home region and the `ReplicaRegions` of the template: `num_replicas`
//! 1 to 3 holds anywhere, 4 to 6 needs one replica region. Writes always go to the home region;
//! the replicas follow asynchronously (DynamoDB's global table replication), so they survive the
//! loss of the home region but answer nothing until a deployment there is pointed at them.
//!
//! `placement` names where a JetStream stream's servers are: here, one deployment. Its
//! `cluster` is the deployment's name (`ClusterName`, the home region by default) and its tags
//! must all be among the deployment's `PlacementTags`, compared without case as nats-server
//! does.

use crate::model::config::{BucketConfig, Settings};
use crate::model::error::KvError;
use crate::model::validate::truncate;
use serde::Serialize;

/// The copies DynamoDB keeps of an item in each region: one per availability zone.
pub const COPIES_PER_REGION: i64 = 3;

/// What this deployment can give a bucket, from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub home_region: String,
    /// Never contains `home_region`, without repeats (`Settings::from_vars` sees to it).
    pub replica_regions: Vec<String>,
    pub cluster: String,
    pub tags: Vec<String>,
}

/// A bucket's replication as kv-bucket-info shows it: what it asked for and where its items are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// The bucket's `num_replicas`, which the deployment gives.
    pub num_replicas: i64,
    /// The copies DynamoDB keeps of each item: three per region.
    pub copies: i64,
    /// The home region first, then the replica regions.
    pub regions: Vec<String>,
    pub cluster: String,
    /// The deployment's placement tags.
    pub tags: Vec<String>,
}

impl Deployment {
    pub fn from_settings(settings: &Settings) -> Deployment {
        Deployment {
            home_region: settings.home_region.clone(),
            replica_regions: settings.replica_regions.clone(),
            cluster: settings.cluster.clone(),
            tags: settings.placement_tags.clone(),
        }
    }

    /// The home region first, then the replica regions.
    pub fn regions(&self) -> Vec<String> {
        std::iter::once(self.home_region.clone())
            .chain(self.replica_regions.iter().cloned())
            .collect()
    }

    pub fn copies(&self) -> i64 {
        COPIES_PER_REGION.saturating_mul(i64::try_from(self.regions().len()).unwrap_or(i64::MAX))
    }

    pub fn replication(&self, config: &BucketConfig) -> Replication {
        Replication {
            num_replicas: config.num_replicas,
            copies: self.copies(),
            regions: self.regions(),
            cluster: self.cluster.clone(),
            tags: self.tags.clone(),
        }
    }

    /// "3 copies in us-east-1 only", "6 copies in us-east-1 and eu-west-1".
    fn describe_copies(&self) -> String {
        let regions = self.regions();
        let place = match regions.as_slice() {
            [home] => format!("{home} only"),
            [first @ .., last] => format!("{} and {last}", first.join(", ")),
            [] => String::new(),
        };
        format!("{} copies in {place}", self.copies())
    }
}

/// Whether the deployment can give what the bucket asks: kv-bucket-create refuses it before
/// writing anything otherwise, with a 400 naming what was asked and what is available.
pub fn check_placement(config: &BucketConfig, deployment: &Deployment) -> Result<(), KvError> {
    let asked = config.num_replicas;
    if asked > deployment.copies() {
        let setting = if deployment.replica_regions.is_empty() {
            "set the ReplicaRegions parameter"
        } else {
            "add regions to the ReplicaRegions parameter"
        };
        // Regions needed: num_replicas / 3, rounded up.
        let regions = (asked + COPIES_PER_REGION - 1) / COPIES_PER_REGION;
        return Err(KvError::param(format!(
            "num_replicas {asked} needs a global table in {regions} regions; this deployment keeps {} ({setting})",
            deployment.describe_copies()
        )));
    }
    let Some(placement) = &config.placement else {
        return Ok(());
    };
    if let Some(cluster) = &placement.cluster {
        if *cluster != deployment.cluster {
            return Err(KvError::param(format!(
                "placement.cluster '{}' is not available: this deployment is cluster '{}' (the ClusterName parameter)",
                truncate(cluster),
                deployment.cluster
            )));
        }
    }
    let missing: Vec<String> = placement
        .tags
        .iter()
        .filter(|tag| {
            !deployment
                .tags
                .iter()
                .any(|available| available.eq_ignore_ascii_case(tag))
        })
        .map(|tag| format!("'{}'", truncate(tag)))
        .collect();
    if !missing.is_empty() {
        let available = if deployment.tags.is_empty() {
            "this deployment has no placement tags".to_string()
        } else {
            format!(
                "this deployment's tags are {}",
                deployment
                    .tags
                    .iter()
                    .map(|tag| format!("'{tag}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(KvError::param(format!(
            "placement.tags {} not available: {available} (the PlacementTags parameter)",
            if missing.len() == 1 {
                format!("{} is", missing[0])
            } else {
                format!("{} are", missing.join(", "))
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Placement, Settings, Storage};
    use std::collections::BTreeMap;

    fn config(num_replicas: i64, placement: Option<Placement>) -> BucketConfig {
        BucketConfig {
            bucket: "b".into(),
            description: String::new(),
            ttl: 0,
            history: 1,
            max_bytes: -1,
            max_value_size: -1,
            storage: Storage::File,
            num_replicas,
            compression: false,
            metadata: BTreeMap::new(),
            placement,
            mirror: None,
            republish: None,
            sources: Vec::new(),
        }
    }

    fn placement(cluster: Option<&str>, tags: &[&str]) -> Option<Placement> {
        Some(Placement {
            cluster: cluster.map(str::to_string),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
        })
    }

    fn home_only() -> Deployment {
        Deployment::from_settings(&Settings::with_tables("b", "i"))
    }

    fn global() -> Deployment {
        Deployment {
            home_region: "us-east-1".into(),
            replica_regions: vec!["eu-west-1".into()],
            cluster: "east".into(),
            tags: vec!["ssd".into(), "fast".into()],
        }
    }

    fn refusal(config: &BucketConfig, deployment: &Deployment) -> String {
        let error = check_placement(config, deployment).expect_err("refused");
        assert_eq!(error.code(), "invalid_parameter");
        assert_eq!(error.status_code(), 400);
        error.to_string()
    }

    #[test]
    fn one_region_gives_up_to_three_replicas() {
        let deployment = home_only();
        assert_eq!(deployment.copies(), 3);
        for n in 1..=3 {
            assert_eq!(check_placement(&config(n, None), &deployment), Ok(()));
        }
        for n in 4..=5 {
            let message = refusal(&config(n, None), &deployment);
            assert_eq!(
                message,
                format!(
                    "num_replicas {n} needs a global table in 2 regions; this deployment keeps 3 copies in us-east-1 only (set the ReplicaRegions parameter)"
                )
            );
        }
    }

    #[test]
    fn a_replica_region_gives_up_to_six() {
        let deployment = global();
        assert_eq!(deployment.copies(), 6);
        for n in 1..=5 {
            assert_eq!(check_placement(&config(n, None), &deployment), Ok(()));
        }
        // Beyond what kv-bucket-create accepts today, but the rule holds.
        let message = refusal(&config(7, None), &deployment);
        assert_eq!(
            message,
            "num_replicas 7 needs a global table in 3 regions; this deployment keeps 6 copies in us-east-1 and eu-west-1 (add regions to the ReplicaRegions parameter)"
        );
    }

    #[test]
    fn the_cluster_must_be_the_deployments() {
        assert_eq!(
            check_placement(&config(1, placement(Some("us-east-1"), &[])), &home_only()),
            Ok(())
        );
        assert_eq!(
            check_placement(&config(1, placement(Some("east"), &[])), &global()),
            Ok(())
        );
        let message = refusal(&config(1, placement(Some("west"), &[])), &global());
        assert_eq!(
            message,
            "placement.cluster 'west' is not available: this deployment is cluster 'east' (the ClusterName parameter)"
        );
    }

    #[test]
    fn every_tag_must_be_the_deployments() {
        assert_eq!(
            check_placement(&config(1, placement(None, &["SSD", "fast"])), &global()),
            Ok(())
        );
        assert_eq!(
            check_placement(&config(1, placement(None, &[])), &home_only()),
            Ok(())
        );
        let message = refusal(&config(1, placement(None, &["ssd", "gpu"])), &global());
        assert_eq!(
            message,
            "placement.tags 'gpu' is not available: this deployment's tags are 'ssd', 'fast' (the PlacementTags parameter)"
        );
        let message = refusal(&config(1, placement(None, &["gpu", "arm"])), &home_only());
        assert_eq!(
            message,
            "placement.tags 'gpu', 'arm' are not available: this deployment has no placement tags (the PlacementTags parameter)"
        );
    }

    #[test]
    fn replication_shows_the_regions_in_order() {
        let replication = global().replication(&config(5, None));
        assert_eq!(
            replication,
            Replication {
                num_replicas: 5,
                copies: 6,
                regions: vec!["us-east-1".into(), "eu-west-1".into()],
                cluster: "east".into(),
                tags: vec!["ssd".into(), "fast".into()],
            }
        );
    }
}
