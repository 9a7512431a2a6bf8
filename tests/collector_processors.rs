//! Configs for the attribute, resource, redaction and sampling processors: the shapes
//! from the OpenTelemetry Collector contrib READMEs load unchanged; wrong ones fail with
//! every problem and its key path at once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;

use spoor::config::collector::{
    load_collector_config_with_env, ActionTarget, AttributeAction, AttributeValue, CollectorConfig,
    ComponentId, ConvertedType, MatchString, ProcessorConfig, RedactionSummary,
};

fn load(processors: &str, names: &str) -> Result<CollectorConfig, Vec<String>> {
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n\
         processors:\n{processors}\n\
         exporters:\n  debug: {{}}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [{names}]\n      exporters: [debug]\n"
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    load_collector_config_with_env(Some(file.path()), &BTreeMap::new()).map_err(|errors| {
        let mut messages: Vec<String> = errors
            .iter()
            .map(|error| {
                let text = error.to_string();
                match text.rfind(" [file ") {
                    Some(index) => text[..index].to_owned(),
                    None => text,
                }
            })
            .collect();
        messages.sort();
        messages
    })
}

fn processor<'a>(config: &'a CollectorConfig, id: &str) -> &'a ProcessorConfig {
    &config.processors[&ComponentId::parse(id).unwrap()]
}

#[test]
fn attributes_readme_shapes_load() {
    let config = load(
        r#"  attributes/example:
    actions:
      - key: db.table
        action: delete
      - key: redacted_span
        value: true
        action: upsert
      - key: copy_key
        value: "abc"
        action: insert
      - key: account_password
        action: hash
      - pattern: ^http\.request\.header\..*
        action: delete
      - key: "http.url"
        pattern: ^(?P<http_protocol>.*):\/\/(?P<http_domain>.*)\/(?P<http_path>.*)(\?|\&)(?P<http_query_params>.*)
        action: extract
      - key: http.status_code
        action: convert
        converted_type: int
      - key: retries
        value: 3
        action: update
  attributes/include:
    include:
      match_type: regexp
      services: ["auth.*", "login.*"]
      span_names: ["^login"]
      attributes:
        - key: env
          value: ^prod
    exclude:
      match_type: strict
      span_kinds: [SPAN_KIND_CLIENT]
      libraries:
        - name: mongo-java-driver
          version: 3.8.0
    actions:
      - key: tenant
        action: insert
        value: acme"#,
        "attributes/example, attributes/include",
    )
    .unwrap();
    let ProcessorConfig::Attributes(example) = processor(&config, "attributes/example") else {
        panic!("attributes");
    };
    assert_eq!(example.actions.len(), 8);
    assert_eq!(
        example.actions[1],
        AttributeAction::Upsert {
            key: "redacted_span".into(),
            value: AttributeValue::Bool(true)
        }
    );
    assert!(matches!(
        &example.actions[4],
        AttributeAction::Delete(ActionTarget::Pattern(_))
    ));
    assert_eq!(
        example.actions[6],
        AttributeAction::Convert {
            key: "http.status_code".into(),
            to: ConvertedType::Int
        }
    );
    let ProcessorConfig::Attributes(include) = processor(&config, "attributes/include") else {
        panic!("attributes");
    };
    let include_props = include.include.as_ref().unwrap();
    assert_eq!(include_props.services.len(), 2);
    assert!(matches!(include_props.services[0], MatchString::Regexp(_)));
    assert_eq!(include.exclude.as_ref().unwrap().span_kinds, vec![3]);
}

#[test]
fn resource_redaction_and_sampler_readme_shapes_load() {
    let config = load(
        r#"  resource:
    attributes:
      - key: cloud.availability_zone
        value: "zone-1"
        action: upsert
      - key: k8s.cluster.name
        from_attribute: k8s-cluster
        action: insert
  resource/plain:
    attributes:
      - key: redundant-attribute
        action: delete
  redaction:
    allow_all_keys: false
    allowed_keys: [description, group, id, name]
    ignored_keys: [safe_attribute]
    blocked_values:
      - "4[0-9]{12}(?:[0-9]{3})?"
      - "(5[1-5][0-9]{14})"
    blocked_key_patterns: [".*token.*"]
    summary: debug
  redaction/defaults:
    allow_all_keys: true
  probabilistic_sampler:
    hash_seed: 22
    sampling_percentage: 15.3"#,
        "resource/plain, redaction, redaction/defaults, probabilistic_sampler",
    );
    // from_attribute is the one README shape spoor does not support: named, with its path.
    assert_eq!(
        config.unwrap_err(),
        vec!["processors.resource.attributes[1].from_attribute: is not supported by spoor-collector; use value".to_owned()]
    );
    let config = load(
        r#"  resource/plain:
    attributes:
      - key: redundant-attribute
        action: delete
  redaction:
    allow_all_keys: false
    allowed_keys: [description, group, id, name]
    ignored_keys: [safe_attribute]
    blocked_values:
      - "4[0-9]{12}(?:[0-9]{3})?"
    blocked_key_patterns: [".*token.*"]
    summary: debug
  redaction/defaults:
    allow_all_keys: true
  probabilistic_sampler:
    hash_seed: 22
    sampling_percentage: 15.3"#,
        "resource/plain, redaction, redaction/defaults, probabilistic_sampler",
    )
    .unwrap();
    let ProcessorConfig::Redaction(redaction) = processor(&config, "redaction") else {
        panic!("redaction");
    };
    assert_eq!(redaction.summary, RedactionSummary::Debug);
    assert!(
        !redaction.default_blocked_values,
        "own blocked_values replace the defaults"
    );
    let ProcessorConfig::Redaction(defaults) = processor(&config, "redaction/defaults") else {
        panic!("redaction");
    };
    assert!(defaults.default_blocked_values);
    assert_eq!(defaults.summary, RedactionSummary::Silent);
    let ProcessorConfig::ProbabilisticSampler(sampler) =
        processor(&config, "probabilistic_sampler")
    else {
        panic!("sampler");
    };
    assert_eq!((sampler.sampling_percentage, sampler.hash_seed), (15.3, 22));
}

#[test]
fn bad_processor_configs_fail_with_key_paths_all_at_once() {
    let errors = load(
        r#"  attributes:
    include:
      match_type: fuzzy
      span_kinds: [SERVER]
    actions:
      - key: a
        action: insert
      - action: delete
      - key: b
        pattern: "("
        action: hash
      - key: c
        pattern: "no-groups"
        action: extract
      - key: d
        action: convert
        converted_type: float
      - key: e
        action: rename
      - key: f
        value: [1, 2]
        action: upsert
      - key: g
        actoin: delete
  redaction:
    blocked_values: ["[unclosed"]
    summary: loud
  probabilistic_sampler:
    sampling_percentage: 120
    mode: proportional"#,
        "attributes, redaction, probabilistic_sampler",
    )
    .unwrap_err();
    let expected = [
        "processors.attributes.actions[0].value: is required for insert",
        "processors.attributes.actions[1].key: delete needs key or pattern",
        "processors.attributes.actions[2].pattern: set either key or pattern, not both",
        "processors.attributes.actions[3].pattern: must contain at least one named capture group (?P<name>...)",
        "processors.attributes.actions[4].converted_type: must be int, double or string, got \"float\"",
        "processors.attributes.actions[5].action: unsupported action \"rename\" (supported: insert, update, upsert, delete, hash, extract, convert)",
        "processors.attributes.actions[6].value: must be a string, number or boolean",
        "processors.attributes.include.match_type: must be strict or regexp, got \"fuzzy\"",
        "processors.attributes.include.span_kinds[0]: unknown span kind \"SERVER\" (e.g. SPAN_KIND_SERVER)",
        "processors.probabilistic_sampler.mode: only hash_seed is supported by spoor-collector, got \"proportional\"",
        "processors.probabilistic_sampler.sampling_percentage: must be between 0 and 100, got 120",
        "processors.redaction.summary: must be debug, info or silent, got \"loud\"",
    ];
    for line in expected {
        assert!(
            errors.iter().any(|error| error == line),
            "missing {line:?} in {errors:#?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|error| error.starts_with("processors.attributes.actions[7].actoin")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|error| error
            .starts_with("processors.redaction.blocked_values[0]: invalid regular expression")),
        "{errors:#?}"
    );
}
