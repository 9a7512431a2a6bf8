//! Configs for the attribute, resource, redaction and sampling processors: the shapes
//! from the OpenTelemetry Collector contrib READMEs load unchanged; wrong ones fail with
//! every problem and its key path at once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;

use spoor::config::collector::{
    load_collector_config_with_env, ActionTarget, AttributeAction, AttributeValue, CollectorConfig,
    ComponentId, ConvertedType, MatchString, PolicyRule, ProcessorConfig, RedactionSummary,
    StringValues,
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

/// The contrib README's tail_sampling example, minus the policy types spoor does not
/// implement (ottl_condition, trace_state, drop).
const TAIL_SAMPLING_README: &str = r#"  tail_sampling:
    decision_wait: 10s
    num_traces: 100
    expected_new_traces_per_sec: 10
    decision_cache:
      sampled_cache_size: 100000
      non_sampled_cache_size: 100000
    policies:
      [
        {
          name: test-policy-1,
          type: always_sample
        },
        {
          name: test-policy-2,
          type: latency,
          latency: {threshold_ms: 5000, upper_threshold_ms: 10000}
        },
        {
          name: test-policy-3,
          type: numeric_attribute,
          numeric_attribute: {key: key1, min_value: 50, max_value: 100}
        },
        {
          name: test-policy-4,
          type: probabilistic,
          probabilistic: {sampling_percentage: 10}
        },
        {
          name: test-policy-5,
          type: status_code,
          status_code: {status_codes: [ERROR, UNSET]}
        },
        {
          name: test-policy-6,
          type: string_attribute,
          string_attribute: {key: key2, values: [value1, value2]}
        },
        {
          name: test-policy-7,
          type: string_attribute,
          string_attribute: {key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10}
        },
        {
          name: test-policy-8,
          type: rate_limiting,
          rate_limiting: {spans_per_second: 35}
        },
        {
          name: test-policy-9,
          type: string_attribute,
          string_attribute: {key: http.url, values: [\/health, \/metrics], enabled_regex_matching: true, invert_match: true}
        },
        {
          name: test-policy-10,
          type: span_count,
          span_count: {min_spans: 2, max_spans: 20}
        },
        {
          name: test-policy-12,
          type: boolean_attribute,
          boolean_attribute: {key: key4, value: true}
        },
        {
          name: and-policy-1,
          type: and,
          and: {
            and_sub_policy:
            [
              {
                name: test-and-policy-1,
                type: numeric_attribute,
                numeric_attribute: { key: key1, min_value: 50, max_value: 100 }
              },
              {
                name: test-and-policy-2,
                type: string_attribute,
                string_attribute: { key: key2, values: [ value1, value2 ] }
              },
            ]
          }
        },
        {
          name: composite-policy-1,
          type: composite,
          composite:
            {
              max_total_spans_per_second: 1000,
              policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3],
              composite_sub_policy:
                [
                  {
                    name: test-composite-policy-1,
                    type: numeric_attribute,
                    numeric_attribute: {key: key1, min_value: 50, max_value: 100}
                  },
                  {
                    name: test-composite-policy-2,
                    type: string_attribute,
                    string_attribute: {key: key2, values: [value1, value2]}
                  },
                  {
                    name: test-composite-policy-3,
                    type: always_sample
                  }
                ],
              rate_allocation:
                [
                  {
                    policy: test-composite-policy-1,
                    percent: 50
                  },
                  {
                    policy: test-composite-policy-2,
                    percent: 25
                  }
                ]
            }
        },
      ]"#;

#[test]
fn tail_sampling_readme_shape_loads() {
    let config = load(TAIL_SAMPLING_README, "tail_sampling").unwrap();
    let ProcessorConfig::TailSampling(tail) = processor(&config, "tail_sampling") else {
        panic!("tail_sampling");
    };
    assert_eq!(tail.decision_wait, std::time::Duration::from_secs(10));
    assert_eq!(tail.num_traces, 100);
    assert_eq!(
        (tail.sampled_cache_size, tail.non_sampled_cache_size),
        (100_000, 100_000)
    );
    let names: Vec<&str> = tail.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(
        tail.policies[4].rule,
        PolicyRule::StatusCode(vec![2, 0]),
        "ERROR, UNSET"
    );
    let PolicyRule::StringAttribute {
        values: StringValues::Regex(regexes),
        invert_match: true,
        ..
    } = &tail.policies[8].rule
    else {
        panic!("{:?}", tail.policies[8]);
    };
    assert_eq!(regexes.len(), 2);
    let PolicyRule::Composite(composite) = &tail.policies[12].rule else {
        panic!("composite");
    };
    let budgets: Vec<(&str, u64)> = composite
        .sub_policies
        .iter()
        .map(|(policy, budget)| (policy.name.as_str(), *budget))
        .collect();
    assert_eq!(
        budgets,
        [
            ("test-composite-policy-1", 500),
            ("test-composite-policy-2", 250),
            ("test-composite-policy-3", 0)
        ]
    );
    // Defaults: contrib's decision_wait and num_traces.
    let config = load(
        "  tail_sampling:\n    policies: [{name: all, type: always_sample}]",
        "tail_sampling",
    )
    .unwrap();
    let ProcessorConfig::TailSampling(defaults) = processor(&config, "tail_sampling") else {
        panic!("tail_sampling");
    };
    assert_eq!(defaults.decision_wait, std::time::Duration::from_secs(30));
    assert_eq!(defaults.num_traces, 50_000);
}

#[test]
fn bad_tail_sampling_configs_name_the_policy_and_key() {
    let errors = load(
        r#"  tail_sampling:
    decision_wait: 0s
    num_traces: 0
    policies:
      - {name: ottl, type: ottl_condition, ottl_condition: {error_mode: ignore, span: ["true"]}}
      - {name: state, type: trace_state, trace_state: {key: key3, values: [value1]}}
      - {name: no-section, type: latency}
      - {name: codes, type: status_code, status_code: {status_codes: [FAILED]}}
      - {name: no-key, type: string_attribute, string_attribute: {values: [a]}}
      - {name: bad-regex, type: string_attribute, string_attribute: {key: k, values: ["("], enabled_regex_matching: true}}
      - {name: range, type: numeric_attribute, numeric_attribute: {key: k, min_value: 10, max_value: 1}}
      - {name: no-bounds, type: numeric_attribute, numeric_attribute: {key: k}}
      - {name: pct, type: probabilistic, probabilistic: {sampling_percentage: 120}}
      - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 0}}
      - {type: always_sample}
      - {name: rate, type: always_sample}
      - name: nested
        type: and
        and:
          and_sub_policy:
            - {name: inner, type: composite, composite: {max_total_spans_per_second: 1}}
            - {name: inner-ottl, type: ottl_condition}
      - name: comp
        type: composite
        composite:
          max_total_spans_per_second: 100
          policy_order: [a, missing]
          composite_sub_policy:
            - {name: a, type: always_sample}
          rate_allocation:
            - {policy: a, percent: 80}
            - {policy: ghost, percent: 30}
      - {name: typo, type: span_count, span_count: {min_span: 2}}"#,
        "tail_sampling",
    )
    .unwrap_err();
    let p = "processors.tail_sampling";
    let supported = "(supported: always_sample, and, boolean_attribute, composite, latency, numeric_attribute, probabilistic, rate_limiting, span_count, status_code, string_attribute)";
    let expected = [
        format!("{p}.decision_wait: must be greater than 0"),
        format!("{p}.num_traces: must be at least 1"),
        format!("{p}.policies[0].type: unsupported policy type \"ottl_condition\" in policy \"ottl\" {supported}"),
        format!("{p}.policies[1].type: unsupported policy type \"trace_state\" in policy \"state\" {supported}"),
        format!("{p}.policies[2].latency: is required for a policy of type latency"),
        format!("{p}.policies[3].status_code.status_codes[0]: unknown status code \"FAILED\" (OK, ERROR, UNSET)"),
        format!("{p}.policies[4].string_attribute.key: is required"),
        format!("{p}.policies[6].numeric_attribute.max_value: must not be below min_value (10), got 1"),
        format!("{p}.policies[7].numeric_attribute.min_value: min_value or max_value (or both) is required"),
        format!("{p}.policies[8].probabilistic.sampling_percentage: must be between 0 and 100, got 120"),
        format!("{p}.policies[9].rate_limiting.spans_per_second: must be greater than 0"),
        format!("{p}.policies[10].name: is required"),
        format!("{p}.policies[11].name: duplicate policy name \"rate\""),
        format!("{p}.policies[12].and.and_sub_policy[0].type: a composite policy cannot be a sub-policy of an and policy (policy \"inner\")"),
        format!("{p}.policies[12].and.and_sub_policy[1].type: unsupported policy type \"ottl_condition\" in policy \"inner-ottl\" {supported}"),
        format!("{p}.policies[13].composite.policy_order[1]: no composite_sub_policy named \"missing\""),
        format!("{p}.policies[13].composite.rate_allocation[1].policy: no composite_sub_policy named \"ghost\""),
    ];
    for line in &expected {
        assert!(
            errors.iter().any(|error| error == line),
            "missing {line:?} in {errors:#?}"
        );
    }
    assert!(
        errors.iter().any(|error| error.starts_with(&format!(
            "{p}.policies[5].string_attribute.values[0]: invalid regular expression"
        ))),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|error| error.starts_with(&format!("{p}.policies[14].span_count.min_span"))),
        "{errors:#?}"
    );
}
