//! Reading `template.yaml` the way CloudFormation does, for the tests that hold it against the
//! code: intrinsic references in both forms (`!GetAtt X.Arn` and `{"Fn::GetAtt": [X, Arn]}`),
//! the function resources and their binaries, inline policy statements, the state machines.

#![allow(dead_code)]

use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub fn root() -> PathBuf {
    crate::root()
}

pub fn template() -> Yaml {
    let path = root().join("template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).expect("template.yaml"))
        .expect("template.yaml is valid YAML")
}

pub fn text(value: &Yaml) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{value:?}"))
}

/// An intrinsic function the tests understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intrinsic {
    /// `!GetAtt Resource.Attribute`
    GetAtt(String, String),
    /// `!Sub "..."`
    Sub(String),
    /// `!Ref Resource`
    Ref(String),
}

pub fn intrinsic(value: &Yaml) -> Option<Intrinsic> {
    let (name, argument) = match value {
        Yaml::Tagged(tagged) => (
            tagged.tag.to_string().trim_start_matches('!').to_string(),
            &tagged.value,
        ),
        Yaml::Mapping(mapping) if mapping.len() == 1 => {
            let (key, argument) = mapping.iter().next()?;
            let key = key.as_str()?;
            let name = if key == "Ref" {
                "Ref"
            } else {
                key.strip_prefix("Fn::")?
            };
            (name.to_string(), argument)
        }
        _ => return None,
    };
    match name.as_str() {
        "GetAtt" => {
            let (resource, attribute) = match argument {
                Yaml::String(dotted) => {
                    let (resource, attribute) = dotted.split_once('.')?;
                    (resource.to_string(), attribute.to_string())
                }
                Yaml::Sequence(parts) if parts.len() == 2 => (text(&parts[0]), text(&parts[1])),
                _ => return None,
            };
            Some(Intrinsic::GetAtt(resource, attribute))
        }
        "Sub" => argument.as_str().map(|s| Intrinsic::Sub(s.to_string())),
        "Ref" => argument.as_str().map(|s| Intrinsic::Ref(s.to_string())),
        _ => None,
    }
}

/// (logical id, resource) of every resource of a type, in template order.
pub fn resources(template: &Yaml, kind: &str) -> Vec<(String, Yaml)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, resource)| text(&resource["Type"]) == kind)
        .map(|(id, resource)| (text(id), resource.clone()))
        .collect()
}

/// Function logical id -> the binary it is built from (`Metadata.BuildProperties.Binary`).
pub fn function_binaries(template: &Yaml) -> BTreeMap<String, String> {
    resources(template, "AWS::Serverless::Function")
        .into_iter()
        .map(|(id, resource)| {
            let binary = text(&resource["Metadata"]["BuildProperties"]["Binary"]);
            (id, binary)
        })
        .collect()
}

pub fn function_named(name: &str) -> Option<kv::Function> {
    kv::Function::ALL
        .into_iter()
        .find(|function| function.name() == name)
}

/// A policy's resource as the tests compare it: `BucketsTable`, `ItemsTable/index/by-sequence`,
/// `KvKeyGetFunction`. Panics on anything that is not a reference to a resource of this template.
pub fn policy_resource(value: &Yaml) -> String {
    if value.as_str() == Some(ANY_RESOURCE) {
        return ANY_RESOURCE.to_string();
    }
    match intrinsic(value) {
        Some(Intrinsic::GetAtt(resource, attribute)) if attribute == "Arn" => resource,
        // A function's alias (`AutoPublishAlias`): what flows invoke, so a canary can shift
        // their calls.
        Some(Intrinsic::Ref(reference)) if reference.ends_with(".Alias") => {
            reference.trim_end_matches(".Alias").to_string()
        }
        Some(Intrinsic::Sub(pattern)) if pattern == EVENT_BUS_ARN => EVENT_BUS.to_string(),
        Some(Intrinsic::Sub(pattern)) => {
            let rest = pattern
                .strip_prefix("${")
                .unwrap_or_else(|| panic!("a policy resource must start with an ARN: {pattern}"));
            let (reference, suffix) = rest.split_once('}').expect("closing brace");
            let resource = reference
                .strip_suffix(".Arn")
                .unwrap_or_else(|| panic!("a policy resource must be an ARN: {pattern}"));
            assert!(
                !suffix.contains('*') && !suffix.contains("${"),
                "no wildcards or other substitutions in a least-privilege resource: {pattern}"
            );
            format!("{resource}{suffix}")
        }
        _ => {
            panic!("a policy resource must be !GetAtt X.Arn or !Sub \"${{X.Arn}}/...\": {value:?}")
        }
    }
}

/// The ARN of the bus the `EventBusName` parameter names, as policies spell it...
pub const EVENT_BUS_ARN: &str =
    "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}";
/// ... and as `policy_resource` returns it.
pub const EVENT_BUS: &str = "EventBus";
/// `Resource: "*"`, allowed only for actions IAM cannot scope (`UNSCOPED_ACTIONS`).
pub const ANY_RESOURCE: &str = "*";
/// Step Functions' task tokens of service integrations name no resource IAM can match.
pub const UNSCOPED_ACTIONS: &[&str] = &["states:SendTaskFailure", "states:SendTaskSuccess"];

/// Every (action, resource) an inline policy of this resource allows. Only inline statements
/// are accepted: SAM's policy templates grant more than a function uses.
pub fn allowed(resource: &Yaml) -> BTreeSet<(String, String)> {
    let mut allowed = BTreeSet::new();
    for policy in resource["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let statements = policy["Statement"].as_sequence().unwrap_or_else(|| {
            panic!("only inline policies ({{Statement: [...]}}) are allowed, found {policy:?}")
        });
        for statement in statements {
            assert_eq!(text(&statement["Effect"]), "Allow", "{statement:?}");
            let list = |value: &Yaml| -> Vec<Yaml> {
                match value {
                    Yaml::Sequence(items) => items.clone(),
                    other => vec![other.clone()],
                }
            };
            for action in list(&statement["Action"]) {
                let action = text(&action);
                assert!(!action.contains('*'), "no wildcard actions: {action}");
                for target in list(&statement["Resource"]) {
                    let resource = policy_resource(&target);
                    assert!(
                        resource != ANY_RESOURCE || UNSCOPED_ACTIONS.contains(&action.as_str()),
                        "Resource \"*\" only for actions IAM cannot scope, not {action}"
                    );
                    allowed.insert((action.clone(), resource));
                }
            }
        }
    }
    allowed
}

pub struct StateMachine {
    pub logical_id: String,
    /// The definition file, relative to the repository root.
    pub definition: String,
    /// `${Name}` -> what it is replaced with at deployment.
    pub substitutions: BTreeMap<String, Intrinsic>,
    pub resource: Yaml,
}

pub fn state_machines(template: &Yaml) -> Vec<StateMachine> {
    resources(template, "AWS::Serverless::StateMachine")
        .into_iter()
        .map(|(logical_id, resource)| {
            let properties = &resource["Properties"];
            let substitutions = properties["DefinitionSubstitutions"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(name, value)| {
                    let reference = intrinsic(value)
                        .unwrap_or_else(|| panic!("{logical_id}: {name:?} is not a reference"));
                    (format!("${{{}}}", text(name)), reference)
                })
                .collect();
            StateMachine {
                definition: text(&properties["DefinitionUri"]),
                substitutions,
                logical_id,
                resource,
            }
        })
        .collect()
}

/// The functions a state machine's Task states can invoke: `${Name}` -> the function.
pub fn substituted_functions(template: &Yaml, machine: &StateMachine) -> BTreeMap<String, String> {
    let binaries = function_binaries(template);
    machine
        .substitutions
        .iter()
        .filter_map(|(name, reference)| {
            let resource = match reference {
                Intrinsic::GetAtt(resource, attribute) if attribute == "Arn" => resource.as_str(),
                // The function's alias (`AutoPublishAlias`), which the flows invoke.
                Intrinsic::Ref(alias) => alias.strip_suffix(".Alias")?,
                _ => return None,
            };
            binaries
                .get(resource)
                .map(|binary| (name.clone(), binary.clone()))
        })
        .collect()
}
