//! The interceptor every client of the functions carries: it asks DynamoDB for the capacity
//! each request consumed (`ReturnConsumedCapacity`, which costs nothing) and counts requests
//! and units into the invocation (`model::metrics`), where the function's metric record reads
//! them.

use crate::model::metrics;
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::{
    batch_get_item::{BatchGetItemInput, BatchGetItemOutput},
    batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput},
    delete_item::{DeleteItemInput, DeleteItemOutput},
    get_item::{GetItemInput, GetItemOutput},
    put_item::{PutItemInput, PutItemOutput},
    query::{QueryInput, QueryOutput},
    scan::{ScanInput, ScanOutput},
    transact_get_items::{TransactGetItemsInput, TransactGetItemsOutput},
    transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput},
    update_item::{UpdateItemInput, UpdateItemOutput},
};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_runtime_api::client::interceptors::context::{Input, Output};
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMeter;

/// Asks for the request's consumed capacity; false for requests that report none (table
/// management), which are not counted.
pub fn ask_for_capacity(input: &mut Input) -> bool {
    macro_rules! ask {
        ($($kind:ty),*) => {
            $(if let Some(input) = input.downcast_mut::<$kind>() {
                input.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
                return true;
            })*
        };
    }
    ask!(
        GetItemInput,
        PutItemInput,
        UpdateItemInput,
        DeleteItemInput,
        QueryInput,
        ScanInput,
        BatchGetItemInput,
        BatchWriteItemInput,
        TransactGetItemsInput,
        TransactWriteItemsInput
    );
    false
}

/// Units of one response, as (read, write): reads and writes are told apart by the operation,
/// since DynamoDB reports only `CapacityUnits` for some of them.
pub fn capacity(output: &Output) -> (f64, f64) {
    fn units(consumed: &[ConsumedCapacity]) -> f64 {
        consumed
            .iter()
            .map(|unit| unit.capacity_units.unwrap_or(0.0))
            .sum()
    }
    macro_rules! single {
        ($side:ident, $($kind:ty),*) => {
            $(if let Some(output) = output.downcast_ref::<$kind>() {
                let total = units(output.consumed_capacity.as_slice());
                return single!(@$side total);
            })*
        };
        (@read $total:ident) => { ($total, 0.0) };
        (@write $total:ident) => { (0.0, $total) };
    }
    macro_rules! many {
        ($side:ident, $($kind:ty),*) => {
            $(if let Some(output) = output.downcast_ref::<$kind>() {
                let total = units(output.consumed_capacity.as_deref().unwrap_or_default());
                return single!(@$side total);
            })*
        };
    }
    single!(read, GetItemOutput, QueryOutput, ScanOutput);
    single!(write, PutItemOutput, UpdateItemOutput, DeleteItemOutput);
    many!(read, BatchGetItemOutput, TransactGetItemsOutput);
    many!(write, BatchWriteItemOutput, TransactWriteItemsOutput);
    (0.0, 0.0)
}

impl Intercept for RequestMeter {
    fn name(&self) -> &'static str {
        "KvRequestMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if ask_for_capacity(context.input_mut()) {
            metrics::count(|counts| {
                counts.requests.fetch_add(1, Ordering::Relaxed);
            });
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
            metrics::count(|counts| counts.add_units(read, write));
        }
        Ok(())
    }
}
