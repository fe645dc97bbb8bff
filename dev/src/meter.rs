//! An SDK interceptor that records every DynamoDB request a client sends (the IAM actions and
//! resources it needs) and the capacity DynamoDB reports for it. The benchmark counts requests
//! and units with it; the template test checks each function's policy against what it records.

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::{
    batch_get_item::BatchGetItemInput, batch_write_item::BatchWriteItemInput,
    delete_item::DeleteItemInput, get_item::GetItemInput, put_item::PutItemInput,
    query::QueryInput, scan::ScanInput, transact_get_items::TransactGetItemsInput,
    transact_write_items::TransactWriteItemsInput, update_item::UpdateItemInput,
};
use aws_sdk_dynamodb::types::ReturnConsumedCapacity;
use aws_smithy_runtime_api::client::interceptors::context::Input;
use std::sync::{Arc, Mutex};

/// One IAM permission a request needs: the action and the table (or `table/index/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub action: String,
    pub resource: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The API operation, e.g. `TransactWriteItems`.
    pub operation: String,
    pub permissions: Vec<Permission>,
    /// Items in a transaction or batch (1 for single-item requests).
    pub items: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub requests: Vec<Request>,
    /// Capacity as DynamoDB reported it (DynamoDB Local under-reports transactions).
    pub read_units: f64,
    pub write_units: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Meter {
    reading: Arc<Mutex<Reading>>,
}

impl Reading {
    /// The operations of the requests recorded, in order (`GetItem`, `UpdateItem`, ...).
    pub fn operations(&self) -> Vec<String> {
        self.requests
            .iter()
            .map(|request| request.operation.clone())
            .collect()
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter::default()
    }

    /// What was recorded since the last call, leaving the meter empty.
    pub fn take(&self) -> Reading {
        self.reading
            .lock()
            .map(|mut reading| std::mem::take(&mut *reading))
            .unwrap_or_default()
    }

    fn record(&self, update: impl FnOnce(&mut Reading)) {
        if let Ok(mut reading) = self.reading.lock() {
            update(&mut reading);
        }
    }
}

fn permission(action: &str, table: Option<&str>, index: Option<&str>) -> Permission {
    let table = table.unwrap_or("?");
    Permission {
        action: format!("dynamodb:{action}"),
        resource: match index {
            Some(index) => format!("{table}/index/{index}"),
            None => table.to_string(),
        },
    }
}

/// The request's operation and permissions; asks DynamoDB to report consumed capacity.
fn describe(input: &mut Input) -> Option<Request> {
    let total = Some(ReturnConsumedCapacity::Total);
    let single = |operation: &str, table: Option<&str>, index: Option<&str>| Request {
        operation: operation.to_string(),
        permissions: vec![permission(operation, table, index)],
        items: 1,
    };
    if let Some(input) = input.downcast_mut::<GetItemInput>() {
        input.return_consumed_capacity = total;
        return Some(single("GetItem", input.table_name.as_deref(), None));
    }
    if let Some(input) = input.downcast_mut::<PutItemInput>() {
        input.return_consumed_capacity = total;
        return Some(single("PutItem", input.table_name.as_deref(), None));
    }
    if let Some(input) = input.downcast_mut::<UpdateItemInput>() {
        input.return_consumed_capacity = total;
        return Some(single("UpdateItem", input.table_name.as_deref(), None));
    }
    if let Some(input) = input.downcast_mut::<DeleteItemInput>() {
        input.return_consumed_capacity = total;
        return Some(single("DeleteItem", input.table_name.as_deref(), None));
    }
    if let Some(input) = input.downcast_mut::<QueryInput>() {
        input.return_consumed_capacity = total;
        return Some(single(
            "Query",
            input.table_name.as_deref(),
            input.index_name.as_deref(),
        ));
    }
    if let Some(input) = input.downcast_mut::<ScanInput>() {
        input.return_consumed_capacity = total;
        return Some(single(
            "Scan",
            input.table_name.as_deref(),
            input.index_name.as_deref(),
        ));
    }
    if let Some(input) = input.downcast_mut::<BatchGetItemInput>() {
        input.return_consumed_capacity = total;
        let tables = input.request_items.iter().flatten();
        return Some(Request {
            operation: "BatchGetItem".into(),
            permissions: tables
                .clone()
                .map(|(table, _)| permission("BatchGetItem", Some(table), None))
                .collect(),
            items: tables.map(|(_, keys)| keys.keys().len()).sum(),
        });
    }
    if let Some(input) = input.downcast_mut::<BatchWriteItemInput>() {
        input.return_consumed_capacity = total;
        let tables = input.request_items.iter().flatten();
        return Some(Request {
            operation: "BatchWriteItem".into(),
            permissions: tables
                .clone()
                .map(|(table, _)| permission("BatchWriteItem", Some(table), None))
                .collect(),
            items: tables.map(|(_, writes)| writes.len()).sum(),
        });
    }
    if let Some(input) = input.downcast_mut::<TransactWriteItemsInput>() {
        input.return_consumed_capacity = total;
        let items = input.transact_items.as_deref().unwrap_or_default();
        // Transactions are authorised per item, by the action each item performs.
        let permissions = items
            .iter()
            .filter_map(|item| {
                if let Some(put) = item.put() {
                    Some(permission("PutItem", Some(put.table_name()), None))
                } else if let Some(update) = item.update() {
                    Some(permission("UpdateItem", Some(update.table_name()), None))
                } else if let Some(delete) = item.delete() {
                    Some(permission("DeleteItem", Some(delete.table_name()), None))
                } else {
                    item.condition_check().map(|check| {
                        permission("ConditionCheckItem", Some(check.table_name()), None)
                    })
                }
            })
            .collect();
        return Some(Request {
            operation: "TransactWriteItems".into(),
            permissions,
            items: items.len(),
        });
    }
    if let Some(input) = input.downcast_mut::<TransactGetItemsInput>() {
        input.return_consumed_capacity = total;
        let items = input.transact_items.as_deref().unwrap_or_default();
        return Some(Request {
            operation: "TransactGetItems".into(),
            permissions: items
                .iter()
                .filter_map(|item| item.get())
                .map(|get| permission("GetItem", Some(get.table_name()), None))
                .collect(),
            items: items.len(),
        });
    }
    None
}

/// Units of one response, as (read, write): the functions' own reading of them.
pub use kv::store::metering::capacity;

impl Intercept for Meter {
    fn name(&self) -> &'static str {
        "KvMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(request) = describe(context.input_mut()) {
            self.record(|reading| reading.requests.push(request));
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(output) = context.output_or_error() {
            let (read, write) = capacity(output);
            self.record(|reading| {
                reading.read_units += read;
                reading.write_units += write;
            });
        }
        Ok(())
    }
}
