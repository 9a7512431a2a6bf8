//! Feeds arbitrary text to the collector's config loader
//! (`load_collector_config_from_str`, what `spoor-collector --config` runs on the file),
//! with an empty environment. Accepted: a config, or a non-empty list of errors of known
//! kinds.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use spoor::config::collector::load_collector_config_from_str;
use spoor::config::ConfigError;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = load_collector_config_from_str(text, None, &BTreeMap::new()) {
        assert!(!errors.errors().is_empty());
        for error in &errors {
            match error {
                ConfigError::File { .. }
                | ConfigError::UnknownKey { .. }
                | ConfigError::InvalidValue { .. } => {}
            }
        }
    }
});
