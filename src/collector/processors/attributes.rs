//! `attributes` (span attributes, with include/exclude) and `resource` (resource
//! attributes): both run the shared action engine in [`super::attraction`].

use crate::collector::batch::SpanBatch;
use crate::config::collector::{
    AttributesConfig, MatchAttribute, MatchProperties, MatchString, ResourceConfig,
};
use crate::otlp::{OtlpKeyValue, OtlpResource, OtlpScope, OtlpSpan};

use super::attraction::{apply, as_str, as_text};

/// `attributes`: modifies the attributes of the spans `include`/`exclude` select.
#[derive(Debug)]
pub(crate) struct AttributesProcessor {
    config: AttributesConfig,
}

impl AttributesProcessor {
    pub(crate) fn new(config: AttributesConfig) -> AttributesProcessor {
        AttributesProcessor { config }
    }

    pub(crate) fn process(&self, batch: &mut SpanBatch) {
        for rs in &mut batch.resource_spans {
            let resource = rs.resource.as_ref();
            for ss in &mut rs.scope_spans {
                let scope = ss.scope.as_ref();
                for span in &mut ss.spans {
                    if self.selects(resource, scope, span) {
                        apply(&self.config.actions, &mut span.attributes);
                    }
                }
            }
        }
    }

    fn selects(
        &self,
        resource: Option<&OtlpResource>,
        scope: Option<&OtlpScope>,
        span: &OtlpSpan,
    ) -> bool {
        let included = self
            .config
            .include
            .as_ref()
            .is_none_or(|include| matches(include, resource, scope, span));
        let excluded = self
            .config
            .exclude
            .as_ref()
            .is_some_and(|exclude| matches(exclude, resource, scope, span));
        included && !excluded
    }
}

/// `resource`: modifies resource attributes.
#[derive(Debug)]
pub(crate) struct ResourceProcessor {
    config: ResourceConfig,
}

impl ResourceProcessor {
    pub(crate) fn new(config: ResourceConfig) -> ResourceProcessor {
        ResourceProcessor { config }
    }

    pub(crate) fn process(&self, batch: &mut SpanBatch) {
        for rs in &mut batch.resource_spans {
            // A missing resource is an empty one: `insert` must still be able to add
            // attributes to it.
            let resource = rs.resource.get_or_insert_with(OtlpResource::default);
            apply(&self.config.actions, &mut resource.attributes);
        }
    }
}

fn string_matches(matcher: &MatchString, text: &str) -> bool {
    match matcher {
        MatchString::Strict(wanted) => wanted == text,
        MatchString::Regexp(regex) => regex.regex().is_match(text),
    }
}

fn attributes_match(conditions: &[MatchAttribute], attributes: &[OtlpKeyValue]) -> bool {
    conditions.iter().all(|condition| {
        let Some(kv) = attributes.iter().find(|kv| kv.key == condition.key) else {
            return false;
        };
        match &condition.value {
            None => true,
            Some(matcher) => {
                as_text(kv.value.as_ref()).is_some_and(|text| string_matches(matcher, &text))
            }
        }
    })
}

/// The contrib `filterconfig` semantics: every property that is set must match.
pub(crate) fn matches(
    properties: &MatchProperties,
    resource: Option<&OtlpResource>,
    scope: Option<&OtlpScope>,
    span: &OtlpSpan,
) -> bool {
    let resource_attributes = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
    if !properties.services.is_empty() {
        let service = resource_attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| as_str(kv.value.as_ref()))
            .unwrap_or("");
        if !properties
            .services
            .iter()
            .any(|matcher| string_matches(matcher, service))
        {
            return false;
        }
    }
    if !properties.span_names.is_empty()
        && !properties
            .span_names
            .iter()
            .any(|matcher| string_matches(matcher, &span.name))
    {
        return false;
    }
    if !properties.span_kinds.is_empty() && !properties.span_kinds.contains(&span.kind) {
        return false;
    }
    if !properties.libraries.is_empty() {
        let (name, version) = scope
            .map(|scope| (scope.name.as_str(), scope.version.as_str()))
            .unwrap_or(("", ""));
        let any = properties
            .libraries
            .iter()
            .any(|(name_matcher, version_matcher)| {
                string_matches(name_matcher, name)
                    && version_matcher
                        .as_ref()
                        .is_none_or(|matcher| string_matches(matcher, version))
            });
        if !any {
            return false;
        }
    }
    attributes_match(&properties.resources, resource_attributes)
        && attributes_match(&properties.attributes, &span.attributes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::config::collector::{ActionTarget, AttributeAction, AttributeValue, ConfigRegex};
    use crate::otlp::{OtlpAnyValue, OtlpResourceSpans, OtlpScopeSpans, OtlpSpanKind, OtlpValue};
    use crate::tenant::TenantId;

    fn s(key: &str, value: &str) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.to_owned(),
            value: Some(OtlpAnyValue {
                value: Some(OtlpValue::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn batch(service: &str, spans: Vec<OtlpSpan>) -> SpanBatch {
        SpanBatch::new(
            TenantId::single(),
            vec![OtlpResourceSpans {
                resource: Some(OtlpResource {
                    attributes: vec![s("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![OtlpScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
            Vec::new(),
        )
    }

    fn span(name: &str, kind: OtlpSpanKind, attributes: Vec<OtlpKeyValue>) -> OtlpSpan {
        OtlpSpan {
            name: name.to_owned(),
            kind: kind as i32,
            attributes,
            ..Default::default()
        }
    }

    fn tagged(batch: &SpanBatch) -> Vec<bool> {
        batch.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|span| span.attributes.iter().any(|kv| kv.key == "tagged"))
            .collect()
    }

    fn tag() -> Vec<AttributeAction> {
        vec![AttributeAction::Insert {
            key: "tagged".into(),
            value: AttributeValue::Bool(true),
        }]
    }

    #[test]
    fn include_exclude_select_spans() {
        let spans = vec![
            span("login", OtlpSpanKind::Server, vec![s("env", "prod")]),
            span("login", OtlpSpanKind::Client, vec![s("env", "prod")]),
            span("logout", OtlpSpanKind::Server, vec![s("env", "dev")]),
            span("other", OtlpSpanKind::Server, Vec::new()),
        ];
        let processor = AttributesProcessor::new(AttributesConfig {
            actions: tag(),
            include: Some(MatchProperties {
                services: vec![MatchString::Strict("auth".into())],
                span_names: vec![MatchString::Regexp(ConfigRegex(
                    regex::Regex::new("^log").unwrap(),
                ))],
                ..Default::default()
            }),
            exclude: Some(MatchProperties {
                span_kinds: vec![OtlpSpanKind::Client as i32],
                ..Default::default()
            }),
        });
        let mut auth = batch("auth", spans.clone());
        processor.process(&mut auth);
        assert_eq!(tagged(&auth), [true, false, true, false]);
        let mut other = batch("billing", spans.clone());
        processor.process(&mut other);
        assert_eq!(tagged(&other), [false; 4]);

        let by_attribute = AttributesProcessor::new(AttributesConfig {
            actions: tag(),
            include: Some(MatchProperties {
                attributes: vec![MatchAttribute {
                    key: "env".into(),
                    value: Some(MatchString::Strict("prod".into())),
                }],
                ..Default::default()
            }),
            exclude: None,
        });
        let mut all = batch("auth", spans);
        by_attribute.process(&mut all);
        assert_eq!(tagged(&all), [true, true, false, false]);
    }

    #[test]
    fn resource_actions_apply_to_resource_attributes() {
        let processor = ResourceProcessor::new(ResourceConfig {
            actions: vec![
                AttributeAction::Upsert {
                    key: "deployment.environment".into(),
                    value: AttributeValue::String("prod".into()),
                },
                AttributeAction::Delete(ActionTarget::Key("service.name".into())),
            ],
        });
        let mut batch = batch("auth", vec![span("x", OtlpSpanKind::Server, Vec::new())]);
        batch.resource_spans.push(OtlpResourceSpans::default());
        processor.process(&mut batch);
        for rs in &batch.resource_spans {
            let resource = rs.resource.as_ref().unwrap();
            assert_eq!(
                resource.attributes,
                vec![s("deployment.environment", "prod")]
            );
        }
    }
}
