//! The items table's stream records carry items in DynamoDB's JSON form (`{"S": "text"}`);
//! here they become items again, for the conversions of `items`.

use crate::store::items::Item;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

/// A stream image (DynamoDB's JSON form of an item) as an item.
pub fn image(value: Option<&Value>) -> Option<Item> {
    let Value::Object(fields) = value? else {
        return None;
    };
    fields
        .iter()
        .map(|(name, value)| attribute(value).map(|value| (name.clone(), value)))
        .collect()
}

fn attribute(value: &Value) -> Option<AttributeValue> {
    let Value::Object(typed) = value else {
        return None;
    };
    let (kind, inner) = typed.iter().next()?;
    Some(match (kind.as_str(), inner) {
        ("S", Value::String(text)) => AttributeValue::S(text.clone()),
        ("N", Value::String(number)) => AttributeValue::N(number.clone()),
        ("B", Value::String(encoded)) => {
            AttributeValue::B(Blob::new(aws_smithy_types::base64::decode(encoded).ok()?))
        }
        ("BOOL", Value::Bool(flag)) => AttributeValue::Bool(*flag),
        ("NULL", _) => AttributeValue::Null(true),
        ("L", Value::Array(list)) => {
            AttributeValue::L(list.iter().map(attribute).collect::<Option<_>>()?)
        }
        ("M", Value::Object(_)) => AttributeValue::M(image(Some(inner))?),
        ("SS", Value::Array(list)) => AttributeValue::Ss(
            list.iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// A stream record of an item keyed `rev` 0: a key's head (`pk` `BUCKET/KEY`) or a bucket's
/// usage item (`pk` `BUCKET`), with the images the record carries.
#[derive(Debug, Clone)]
pub struct RecordImages {
    pub pk: String,
    pub old: Option<Item>,
    pub new: Option<Item>,
}

/// The images of a head's or usage item's record; None for other items (archived revisions);
/// an error naming what is missing for a record that is not a DynamoDB stream record.
pub fn record_images(record: &Value) -> Result<Option<RecordImages>, &'static str> {
    let stream = record.get("dynamodb").ok_or("no 'dynamodb' field")?;
    let keys = image(stream.get("Keys")).ok_or("no 'Keys'")?;
    let (Some(pk), Some(0)) = (
        crate::store::items::get_str(&keys, crate::store::items::PK),
        crate::store::items::get_u64(&keys, crate::store::items::REVISION),
    ) else {
        return Ok(None);
    };
    Ok(Some(RecordImages {
        pk: pk.to_string(),
        old: image(stream.get("OldImage")),
        new: image(stream.get("NewImage")),
    }))
}

/// What names a stream record for as long as the stream keeps it: its `eventID`, or its
/// `SequenceNumber` in a hand-made event that has none.
pub fn record_id(record: &Value) -> String {
    let field = |name: &str| {
        record
            .get(name)
            .or_else(|| record.get("dynamodb").and_then(|stream| stream.get(name)))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_string)
    };
    field("eventID")
        .or_else(|| field("SequenceNumber"))
        .unwrap_or_default()
}

/// The `pk` a record's keys name, whatever item it is (empty when it has none).
pub fn record_pk(record: &Value) -> String {
    record
        .get("dynamodb")
        .and_then(|stream| stream.get("Keys"))
        .and_then(|keys| keys.get(crate::store::items::PK))
        .and_then(|pk| pk.get("S"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
