//! The intrinsic functions a template may call (`"key.$": "States.Format('{}', $.a)"`):
//! `States.Format`, `States.JsonToString`, `States.StringToJson`; and the context object's
//! timestamps.

use serde_json::Value;

/// Calls `expression`; `resolve` evaluates a path argument (`$.a`, `$$.State.Name`).
pub fn call(
    expression: &str,
    resolve: &dyn Fn(&str) -> Result<Value, crate::Failure>,
) -> Result<Value, String> {
    let open = expression
        .find('(')
        .ok_or_else(|| format!("{expression}: not an intrinsic call"))?;
    let name = &expression[..open];
    let inner = expression[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| format!("{expression}: no closing parenthesis"))?;
    let arguments = split_arguments(inner)?
        .into_iter()
        .map(|argument| argument_value(&argument, resolve))
        .collect::<Result<Vec<Value>, String>>()?;
    match name {
        "States.Format" => format(&arguments),
        "States.JsonToString" => match arguments.as_slice() {
            [value] => Ok(Value::String(value.to_string())),
            _ => Err("States.JsonToString takes one argument".into()),
        },
        "States.StringToJson" => match arguments.as_slice() {
            [Value::String(text)] => {
                serde_json::from_str(text).map_err(|error| format!("States.StringToJson: {error}"))
            }
            _ => Err("States.StringToJson takes one string".into()),
        },
        other => Err(format!("the intrinsic function {other} is not supported")),
    }
}

/// Arguments at the top level of a call, split on commas outside quotes.
fn split_arguments(inner: &str) -> Result<Vec<String>, String> {
    let mut arguments = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' if quoted => {
                current.push(character);
                if let Some(next) = characters.next() {
                    current.push(next);
                }
            }
            '\'' => {
                quoted = !quoted;
                current.push(character);
            }
            ',' if !quoted => arguments.push(std::mem::take(&mut current)),
            _ => current.push(character),
        }
    }
    if quoted {
        return Err(format!("an unterminated string in ({inner})"));
    }
    if !current.trim().is_empty() || !arguments.is_empty() {
        arguments.push(current);
    }
    Ok(arguments
        .into_iter()
        .map(|argument| argument.trim().to_string())
        .collect())
}

fn argument_value(
    argument: &str,
    resolve: &dyn Fn(&str) -> Result<Value, crate::Failure>,
) -> Result<Value, String> {
    if let Some(literal) = argument.strip_prefix('\'') {
        let literal = literal
            .strip_suffix('\'')
            .ok_or_else(|| format!("{argument}: an unterminated string"))?;
        // `\'` and `\\` are undone here; `\{` and `\}` stay for States.Format.
        let mut text = String::new();
        let mut characters = literal.chars().peekable();
        while let Some(character) = characters.next() {
            match (character, characters.peek()) {
                ('\\', Some('\'' | '\\')) => text.extend(characters.next()),
                (other, _) => text.push(other),
            }
        }
        return Ok(Value::String(text));
    }
    if argument.starts_with('$') {
        return resolve(argument).map_err(|failure| failure.cause);
    }
    serde_json::from_str(argument)
        .map_err(|_| format!("{argument}: not a string, number, boolean, null or path"))
}

/// `States.Format('{} and {}', a, b)`: each `{}` replaced by the next argument (strings as
/// they are, other scalars as JSON); `\{` and `\}` are literal braces.
fn format(arguments: &[Value]) -> Result<Value, String> {
    let Some((Value::String(template), values)) = arguments.split_first() else {
        return Err("States.Format's first argument must be a string".into());
    };
    let mut values = values.iter();
    let mut out = String::new();
    let mut characters = template.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '\\' => out.extend(characters.next()),
            '{' if characters.peek() == Some(&'}') => {
                characters.next();
                let value = values
                    .next()
                    .ok_or("States.Format has more {} than arguments")?;
                match value {
                    Value::String(text) => out.push_str(text),
                    Value::Object(_) | Value::Array(_) => {
                        return Err(
                            "States.Format takes strings, numbers, booleans and null only".into(),
                        )
                    }
                    scalar => out.push_str(&scalar.to_string()),
                }
            }
            other => out.push(other),
        }
    }
    if values.next().is_some() {
        return Err("States.Format has more arguments than {}".into());
    }
    Ok(Value::String(out))
}

/// Now as Step Functions writes the context's times: `2026-11-28T22:10:00.123Z`.
pub fn now_iso8601() -> String {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    iso8601(elapsed.as_millis())
}

fn iso8601(epoch_ms: u128) -> String {
    let millis = epoch_ms % 1000;
    let seconds = epoch_ms / 1000;
    let (days, day_seconds) = (seconds / 86_400, seconds % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm), in unsigned arithmetic from 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(path: &str) -> Result<Value, crate::Failure> {
        match path {
            "$.a" => Ok(json!("x")),
            "$.n" => Ok(json!(3)),
            "$$.State.Name" => Ok(json!("Count")),
            _ => Err(crate::Failure {
                error: "States.Runtime".into(),
                cause: format!("no {path}"),
            }),
        }
    }

    #[test]
    fn format_fills_placeholders_from_literals_and_paths() {
        let called = call(
            "States.Format('{}/{}/{}', $.a, $$.State.Name, $.n)",
            &resolve,
        );
        assert_eq!(called, Ok(json!("x/Count/3")));
        let escaped = call(r"States.Format('it\'s {} \{\}', 'a, b')", &resolve);
        assert_eq!(escaped, Ok(json!("it's a, b {}")));
        assert!(call("States.Format('{}')", &resolve).is_err());
        assert!(call("States.Format('x', $.a)", &resolve).is_err());
        assert!(call("States.Format('{}', $.missing)", &resolve).is_err());
        assert!(call("States.Hash($.a)", &resolve).is_err());
    }

    #[test]
    fn json_to_string_and_back() {
        assert_eq!(call("States.JsonToString($.n)", &resolve), Ok(json!("3")));
        assert_eq!(
            call("States.StringToJson('{\"b\": 1}')", &resolve),
            Ok(json!({"b": 1}))
        );
    }

    #[test]
    fn timestamps_are_iso8601_in_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_903_722_068), "2026-11-28T22:08:42.068Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
