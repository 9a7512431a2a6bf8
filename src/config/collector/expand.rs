//! `${env:VAR}` substitution in config values, as the OpenTelemetry Collector does it.
//!
//! Accepted forms inside any string value: `${env:VAR}`, `${VAR}` (the older form),
//! `${env:VAR:-default}` (the default is used when VAR is unset or empty), and `$$` for a
//! literal `$`. Substitution happens on parsed YAML values, never on the file's text, so
//! an environment value cannot inject YAML structure. When a value is exactly one
//! reference, the substituted text is read as a YAML scalar (`${env:PORT}` can fill a
//! number); otherwise the result stays a string. Other providers (`${file:…}`,
//! `${http:…}`) are errors.

use serde_yaml::Value;

/// One substitution problem, with the key path of the value that held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandError {
    pub(crate) key: String,
    pub(crate) message: String,
}

/// Variables that were referenced but not set (they expand to the empty string, as in the
/// OpenTelemetry Collector); reported as warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Expansion {
    pub(crate) unset_variables: Vec<(String, String)>,
    pub(crate) errors: Vec<ExpandError>,
}

/// Substitutes every reference in the string values below `value`. `key` is the path of
/// `value` itself, for messages.
pub(crate) fn expand_tree(
    value: &mut Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    expansion: &mut Expansion,
) {
    match value {
        Value::String(text) => {
            if !text.contains('$') {
                return;
            }
            match expand_string(text, lookup) {
                Ok(expanded) => {
                    for name in expanded.unset {
                        expansion.unset_variables.push((key.to_owned(), name));
                    }
                    *value = if expanded.whole_reference {
                        typed_scalar(expanded.text)
                    } else {
                        Value::String(expanded.text)
                    };
                }
                Err(message) => expansion.errors.push(ExpandError {
                    key: key.to_owned(),
                    message,
                }),
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{key}[{index}]"), lookup, expansion);
            }
        }
        Value::Mapping(mapping) => {
            for (child_key, child) in mapping.iter_mut() {
                let name = match child_key {
                    Value::String(name) => name.clone(),
                    other => super::raw::describe_yaml(other),
                };
                let path = if key.is_empty() {
                    name
                } else {
                    format!("{key}.{name}")
                };
                expand_tree(child, &path, lookup, expansion);
            }
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, key, lookup, expansion),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The substituted text read as YAML when it is a plain scalar, so `"8192"` fills a
/// number; anything else (or nothing) stays a string.
fn typed_scalar(text: String) -> Value {
    if text.is_empty() {
        return Value::String(text);
    }
    match serde_yaml::from_str::<Value>(&text) {
        Ok(value @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => value,
        _ => Value::String(text),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Expanded {
    text: String,
    /// The input was exactly one `${...}` reference.
    whole_reference: bool,
    unset: Vec<String>,
}

fn expand_string(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut out = String::with_capacity(input.len());
    let mut unset = Vec::new();
    let mut references = 0;
    let mut rest = input;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            // A lone `$` (or the old naked `$VAR`, no longer expanded) is literal.
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(format!("unterminated \"${{\" in {input:?}"));
        };
        let reference = &body_start[..end];
        references += 1;
        let (name, default) = parse_reference(reference)?;
        match lookup(name).filter(|value| !value.is_empty()) {
            Some(value) => out.push_str(&value),
            None => match default {
                Some(default) => out.push_str(default),
                None => unset.push(name.to_owned()),
            },
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    let trimmed = input.trim();
    let whole_reference = references == 1
        && trimmed.starts_with("${")
        && trimmed.ends_with('}')
        && trimmed.matches("${").count() == 1;
    Ok(Expanded {
        text: out,
        whole_reference,
        unset,
    })
}

/// `env:NAME`, `env:NAME:-default` or `NAME` → (NAME, default).
fn parse_reference(reference: &str) -> Result<(&str, Option<&str>), String> {
    let spec = match reference.split_once(':') {
        Some(("env", spec)) => spec,
        Some((scheme, _)) if is_provider_scheme(scheme) => {
            return Err(format!(
                "unsupported config provider \"{scheme}\" in \"${{{reference}}}\" (only env is supported)"
            ));
        }
        _ => reference,
    };
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "invalid environment variable name {name:?} in \"${{{reference}}}\""
        ));
    }
    Ok((name, default))
}

fn is_provider_scheme(scheme: &str) -> bool {
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '+' || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("backend.internal".to_owned()),
            "PORT" => Some("4317".to_owned()),
            "EMPTY" => Some(String::new()),
            "FLAG" => Some("true".to_owned()),
            "SNEAKY" => Some("a: {b: c}".to_owned()),
            _ => None,
        }
    }

    fn expand(input: &str) -> (Value, Expansion) {
        let mut value = Value::String(input.to_owned());
        let mut expansion = Expansion::default();
        expand_tree(&mut value, "k", &env, &mut expansion);
        (value, expansion)
    }

    #[test]
    fn forms_and_defaults() {
        assert_eq!(
            expand("${env:HOST}:4317").0,
            Value::from("backend.internal:4317")
        );
        assert_eq!(expand("${HOST}").0, Value::from("backend.internal"));
        assert_eq!(expand("${env:NOPE:-fallback}").0, Value::from("fallback"));
        assert_eq!(expand("${env:EMPTY:-fallback}").0, Value::from("fallback"));
        assert_eq!(
            expand("${env:HOST:-fallback}").0,
            Value::from("backend.internal")
        );
        assert_eq!(expand("cost: $$5").0, Value::from("cost: $5"));
        assert_eq!(expand("$HOST stays").0, Value::from("$HOST stays"));
    }

    #[test]
    fn whole_references_are_typed_and_never_structured() {
        assert_eq!(expand("${env:PORT}").0, Value::from(4317));
        assert_eq!(expand("${env:FLAG}").0, Value::from(true));
        assert_eq!(expand("port ${env:PORT}").0, Value::from("port 4317"));
        // YAML structure in a variable stays text.
        assert_eq!(expand("${env:SNEAKY}").0, Value::from("a: {b: c}"));
    }

    #[test]
    fn unset_variables_expand_empty_and_are_reported() {
        let (value, expansion) = expand("x${env:MISSING}y");
        assert_eq!(value, Value::from("xy"));
        assert_eq!(
            expansion.unset_variables,
            vec![("k".to_owned(), "MISSING".to_owned())]
        );
        assert!(expansion.errors.is_empty());
    }

    #[test]
    fn other_providers_and_bad_syntax_are_errors() {
        let (_, expansion) = expand("${file:/etc/secret}");
        assert!(expansion.errors[0]
            .message
            .contains("unsupported config provider \"file\""));
        let (_, expansion) = expand("${env:HOST");
        assert!(expansion.errors[0].message.contains("unterminated"));
        let (_, expansion) = expand("${env:1BAD}");
        assert!(expansion.errors[0]
            .message
            .contains("invalid environment variable name"));
    }

    #[test]
    fn nested_values_carry_their_key_path() {
        let mut tree: Value = serde_yaml::from_str(
            "exporters:\n  otlp:\n    endpoint: ${env:MISSING}\n    headers: [\"${env:PORT}\"]\n",
        )
        .expect("yaml");
        let mut expansion = Expansion::default();
        expand_tree(&mut tree, "", &env, &mut expansion);
        assert_eq!(
            expansion.unset_variables,
            vec![("exporters.otlp.endpoint".to_owned(), "MISSING".to_owned())]
        );
        assert_eq!(tree["exporters"]["otlp"]["headers"][0], Value::from(4317));
    }
}
