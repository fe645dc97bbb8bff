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
