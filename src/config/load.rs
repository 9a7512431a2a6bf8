//! Loading spoor-server's configuration: layering, unknown keys, type errors.
//!
//! Layers, lowest first: built-in defaults ([`RawServerConfig::default`]) → the YAML file
//! → `SPOOR_` environment variables (`__` separates nested keys) → command-line flags.
//! figment merges them; serde alone would stop at the first problem, so the merged tree
//! is checked key by key and every problem is reported at once.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::error::{ConfigError, ConfigErrors, ValueOrigin};
use super::raw::RawServerConfig;
use super::server::ServerConfig;
use super::validate::{validate, Problems};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SPOOR_";

/// Separates nested keys in environment variable names: `SPOOR_WAL__FSYNC` is `wal.fsync`.
pub const ENV_SEPARATOR: &str = "__";

/// Environment variables under the prefix that are not config keys. `SPOOR_CONFIG` is
/// left to the binary, which may read the config file path from it.
const ENV_IGNORED: &[&str] = &["config"];

/// Names the command-line layer in figment metadata so errors can point at it.
const CLI_METADATA_NAME: &str = "command-line flags";

/// Values from spoor-server's command-line flags. They override every other layer; `None`
/// leaves the key to the lower layers. The binary fills this from clap and adds no
/// defaults of its own, so built-in defaults live in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCliOverrides {
    /// `api.listen_address`.
    pub api_listen_address: Option<String>,
    /// `otlp.grpc.listen_address`.
    pub otlp_grpc_listen_address: Option<String>,
    /// `otlp.http.listen_address`.
    pub otlp_http_listen_address: Option<String>,
    /// State directory: sets `wal.path` to `DIR/wal` and `storage.local.path` to
    /// `DIR/blocks`.
    pub data_dir: Option<PathBuf>,
    /// `log.level`.
    pub log_level: Option<String>,
    /// `log.format`.
    pub log_format: Option<String>,
}

/// Loads and validates spoor-server's configuration.
///
/// `config_file` is the YAML file to read; `None` means built-in defaults plus
/// environment and flags (what `make run` uses). `cli` holds the flag values.
///
/// # Errors
///
/// Every problem found, each naming its full key path: an unreadable or malformed file
/// (given explicitly, so a missing file is an error), unknown keys, values of the wrong
/// type, out-of-range values and inconsistent combinations.
pub fn load_server_config(
    config_file: Option<&Path>,
    cli: &ServerCliOverrides,
) -> Result<ServerConfig, ConfigErrors> {
    load_with_env_prefix(config_file, ENV_PREFIX, cli)
}

/// [`load_server_config`] with the environment prefix as a parameter, so tests can run in
/// parallel, each with its own variables, without touching the real `SPOOR_` ones.
pub(crate) fn load_with_env_prefix(
    config_file: Option<&Path>,
    env_prefix: &str,
    cli: &ServerCliOverrides,
) -> Result<ServerConfig, ConfigErrors> {
    // Serialized once: the bottom layer, and the reference for known keys and the
    // replacement of invalid values.
    let defaults_tree = defaults_tree(&RawServerConfig::default())?;
    let mut figment = Figment::from(Serialized::defaults(&defaults_tree));
    if let Some(path) = config_file {
        if file_has_content(path)? {
            // `file_exact`: a relative path means the working directory, never a parent.
            figment = figment.merge(Yaml::file_exact(path));
        }
    }
    let env = Env::prefixed(env_prefix)
        .split(ENV_SEPARATOR)
        .ignore(ENV_IGNORED);
    figment = figment.merge(env.clone()).merge(CliProvider::new(cli)?);

    let lookup_origin = |key: &str| origin_of(&figment, env_prefix, key);
    let mut problems = Problems::new(&lookup_origin);
    let mut tree: Dict = figment.extract().map_err(|error| {
        // Only the file layer can fail to produce a mapping; the others are built here.
        ConfigErrors::new(vec![match config_file {
            Some(path) => ConfigError::File {
                path: path.to_owned(),
                message: error.kind.to_string(),
            },
            None => internal_error(&format!("the merged config is not a mapping: {error}")),
        }])
    })?;

    restore_env_strings(&mut tree, &defaults_tree, &env, &problems);
    let key_checker = KeyChecker {
        root_defaults: &defaults_tree,
        env_prefix,
    };
    key_checker.check(&mut tree, &defaults_tree, "", &mut problems);
    let raw = deserialize_reporting_all(tree, &defaults_tree, &mut problems);
    let config = validate(raw, &mut problems);
    problems.into_result(config)
}

/// Reads the file up front so a missing or malformed file gets one clear error naming
/// the path (figment ignores missing files), and so that a file holding only comments
/// counts as empty rather than as a null top level.
fn file_has_content(path: &Path) -> Result<bool, ConfigErrors> {
    let file_error = |message: String| {
        ConfigErrors::new(vec![ConfigError::File {
            path: path.to_owned(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| file_error(format!("cannot read: {error}")))?;
    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(serde_yaml::Value::Null) => Ok(false),
        Ok(serde_yaml::Value::Mapping(_)) => Ok(true),
        Ok(_) => Err(file_error(
            "expected a mapping of sections (api:, otlp:, wal:, ...) at the top level".to_owned(),
        )),
        Err(error) => Err(file_error(format!("invalid YAML: {error}"))),
    }
}

/// The command-line layer, named in figment metadata so errors can say a flag set a value.
struct CliProvider {
    dict: Dict,
}

impl CliProvider {
    fn new(cli: &ServerCliOverrides) -> Result<Self, ConfigErrors> {
        let mut dict = Dict::new();
        let strings = [
            ("api.listen_address", &cli.api_listen_address),
            ("otlp.grpc.listen_address", &cli.otlp_grpc_listen_address),
            ("otlp.http.listen_address", &cli.otlp_http_listen_address),
            ("log.level", &cli.log_level),
            ("log.format", &cli.log_format),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                insert_at(&mut dict, key, Value::from(value.clone()));
            }
        }
        if let Some(data_dir) = &cli.data_dir {
            for (key, subdir) in [("wal.path", "wal"), ("storage.local.path", "blocks")] {
                // Config values are strings; a path that is not UTF-8 cannot be one.
                let Some(path) = data_dir.join(subdir).to_str().map(str::to_owned) else {
                    return Err(ConfigErrors::new(vec![ConfigError::InvalidValue {
                        key: key.to_owned(),
                        message: format!(
                            "data directory {} is not valid UTF-8",
                            data_dir.display()
                        ),
                        origin: Some(ValueOrigin::CommandLine),
                    }]));
                };
                insert_at(&mut dict, key, Value::from(path));
            }
        }
        Ok(CliProvider { dict })
    }
}

impl Provider for CliProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(CLI_METADATA_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = Map::new();
        data.insert(Profile::Default, self.dict.clone());
        Ok(data)
    }
}

fn insert_at(dict: &mut Dict, dotted_key: &str, value: Value) {
    match dotted_key.split_once('.') {
        None => {
            dict.insert(dotted_key.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, child) = child {
                insert_at(child, rest, value);
            }
        }
    }
}

fn origin_of(figment: &Figment, env_prefix: &str, key: &str) -> Option<ValueOrigin> {
    let metadata = figment.find_metadata(key)?;
    if let Some(path) = metadata
        .source
        .as_ref()
        .and_then(|source| source.file_path())
    {
        return Some(ValueOrigin::File(path.to_owned()));
    }
    if metadata.name == CLI_METADATA_NAME {
        return Some(ValueOrigin::CommandLine);
    }
    if metadata.name.contains("environment variable") {
        return Some(ValueOrigin::EnvVar(env_var_name(env_prefix, key)));
    }
    None
}

/// `wal.fsync` → `SPOOR_WAL__FSYNC`.
fn env_var_name(env_prefix: &str, key: &str) -> String {
    let parts: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
    format!("{env_prefix}{}", parts.join(ENV_SEPARATOR))
}

fn defaults_tree(defaults: &RawServerConfig) -> Result<Dict, ConfigErrors> {
    match Value::serialize(defaults) {
        Ok(Value::Dict(_, dict)) => Ok(dict),
        _ => Err(ConfigErrors::new(vec![internal_error(
            "the built-in defaults do not serialize to a mapping",
        )])),
    }
}

fn internal_error(message: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: "(internal)".to_owned(),
        message: format!("{message}; this is a bug in spoor-server"),
        origin: None,
    }
}

/// figment parses environment values (`007` becomes the number 7, `1.50` the float 1.5),
/// which would corrupt bucket names, prefixes or keys. For keys whose default is a string
/// and whose value came from the environment, put back the variable's exact text.
fn restore_env_strings(tree: &mut Dict, defaults: &Dict, env: &Env, problems: &Problems<'_>) {
    for (key, text) in env.iter() {
        let key = key.as_str();
        let is_string_key = matches!(lookup(defaults, key), Some(Value::String(..)));
        let set_by_env = matches!(problems.origin_of(key), Some(ValueOrigin::EnvVar(_)));
        if is_string_key && set_by_env {
            insert_at(tree, key, Value::from(text));
        }
    }
}

fn lookup<'a>(dict: &'a Dict, dotted_key: &str) -> Option<&'a Value> {
    let (head, rest) = match dotted_key.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (dotted_key, None),
    };
    let value = dict.get(head)?;
    match (rest, value) {
        (None, value) => Some(value),
        (Some(rest), Value::Dict(_, child)) => lookup(child, rest),
        (Some(_), _) => None,
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Keys whose value is a map with user-chosen keys, so the defaults cannot list them.
const FREE_FORM_MAPS: &[&str] = &[
    "retention.per_tenant",
    "metrics_generator.per_tenant",
    "limits.per_tenant",
    "metrics_generator.remote_write.external_labels",
];

struct KeyChecker<'a> {
    root_defaults: &'a Dict,
    env_prefix: &'a str,
}

impl KeyChecker<'_> {
    /// Reports and removes every key that is not in the defaults, and replaces explicit
    /// nulls (a section header with everything under it commented out) by the default.
    fn check(&self, tree: &mut Dict, defaults: &Dict, parent: &str, problems: &mut Problems<'_>) {
        let keys: Vec<String> = tree.keys().cloned().collect();
        for key in keys {
            let full_key = join_key(parent, &key);
            let Some(default) = defaults.get(&key) else {
                if let Some(value) = tree.remove(&key) {
                    self.report_unknown(&full_key, &value, defaults, parent, problems);
                }
                continue;
            };
            match tree.get_mut(&key) {
                Some(Value::Empty(..)) => {
                    tree.insert(key, default.clone());
                }
                // Free-form maps (tenant → value) have no fixed keys to check; their
                // entries are validated by `validate`.
                Some(Value::Dict(..)) if FREE_FORM_MAPS.contains(&full_key.as_str()) => {}
                Some(Value::Dict(_, child)) => {
                    if let Value::Dict(_, child_defaults) = default {
                        self.check(child, child_defaults, &full_key, problems);
                    }
                }
                _ => {}
            }
        }
    }

    fn report_unknown(
        &self,
        full_key: &str,
        value: &Value,
        siblings: &Dict,
        parent: &str,
        problems: &mut Problems<'_>,
    ) {
        // An unknown section set from the environment (SPOOR_FOO__BAR) only exists through
        // its leaves; look up a leaf so the origin names the actual variable.
        let leaf = first_leaf(full_key, value);
        let origin = problems.origin_of(&leaf);
        let unknown = full_key.rsplit('.').next().unwrap_or(full_key);
        let suggestion = self
            .suggest(unknown, siblings, parent)
            .map(|known| match &origin {
                // The whole corrected variable name, ready to paste.
                Some(ValueOrigin::EnvVar(_)) => {
                    let below = leaf.strip_prefix(full_key).unwrap_or("");
                    env_var_name(self.env_prefix, &format!("{known}{below}"))
                }
                // Relative to the section being written, as in the file.
                _ => match known.strip_prefix(&format!("{parent}.")) {
                    Some(relative) if !parent.is_empty() => relative.to_owned(),
                    _ => known,
                },
            });
        problems.push(ConfigError::UnknownKey {
            key: full_key.to_owned(),
            suggestion,
            origin,
        });
    }

    /// The full path of the known key most likely meant by `unknown` under `parent`:
    /// underscores standing for nesting (`grpc_listen_address` → `grpc.listen_address`,
    /// the mistake of writing `_` for `__` in an environment variable), else a sibling
    /// within a small edit distance, else a key of the same name in another section
    /// (`wal.trace_idle` → `head.trace_idle`).
    fn suggest(&self, unknown: &str, siblings: &Dict, parent: &str) -> Option<String> {
        let unknown = unknown.to_ascii_lowercase();
        if let Some(nested) = resolve_underscores(&unknown, siblings) {
            return Some(join_key(parent, &nested));
        }
        let threshold = (unknown.len() / 3).max(2);
        let closest_sibling = siblings
            .keys()
            .map(|known| (edit_distance(&unknown, known), known))
            .filter(|(distance, _)| *distance <= threshold)
            .min();
        if let Some((_, known)) = closest_sibling {
            return Some(join_key(parent, known));
        }
        find_key_named(self.root_defaults, "", &unknown)
    }
}

fn first_leaf(key: &str, value: &Value) -> String {
    match value {
        Value::Dict(_, dict) => match dict.iter().next() {
            Some((child_key, child)) => first_leaf(&join_key(key, child_key), child),
            None => key.to_owned(),
        },
        _ => key.to_owned(),
    }
}

/// Finds a leaf path under `dict` whose segments joined by `_` spell `word`.
fn resolve_underscores(word: &str, dict: &Dict) -> Option<String> {
    dict.iter().find_map(|(key, value)| {
        let rest = word.strip_prefix(key.as_str())?;
        match (rest, value) {
            ("", Value::Dict(..)) => None,
            ("", _) => Some(key.clone()),
            (rest, Value::Dict(_, child)) => {
                let nested = resolve_underscores(rest.strip_prefix('_')?, child)?;
                Some(format!("{key}.{nested}"))
            }
            _ => None,
        }
    })
}

/// The full path of the first key anywhere in the tree called exactly `name`.
fn find_key_named(dict: &Dict, parent: &str, name: &str) -> Option<String> {
    dict.iter().find_map(|(key, value)| {
        let full_key = join_key(parent, key);
        if key == name {
            return Some(full_key);
        }
        match value {
            Value::Dict(_, child) => find_key_named(child, &full_key, name),
            _ => None,
        }
    })
}

/// Levenshtein distance; keys are short, so the quadratic table is fine. Shared with the
/// collector's loader for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Deserializes the merged tree, reporting every type error: serde stops at the first
/// one, so each failed pass reports it, puts the default in its place and tries again.
/// Each pass fixes one key, so the number of passes is bounded by the number of keys.
fn deserialize_reporting_all(
    mut tree: Dict,
    defaults: &Dict,
    problems: &mut Problems<'_>,
) -> RawServerConfig {
    for _ in 0..=count_leaves(defaults) {
        let error = match Value::Dict(Tag::Default, tree.clone()).deserialize() {
            Ok(raw) => return raw,
            Err(error) => error,
        };
        let key = error.path.join(".");
        problems.invalid(&list_style_key(&error.path), describe(&error.kind));
        match lookup(defaults, &key) {
            Some(default) if !key.is_empty() => insert_at(&mut tree, &key, default.clone()),
            // Entries of lists (`api.auth.bearer[0]`) have no defaults: dropping the bad
            // key lets the other problems still be found in the same run.
            _ if remove_at(&mut tree, &error.path) => {}
            // Unknown keys are gone by now, so every error names a key with a default;
            // if not, the error just reported already fails the load.
            _ => break,
        }
    }
    // Reached only after reporting at least one error, so these defaults never become
    // the running config; they let validation report the remaining problems.
    debug_assert!(!problems.is_empty());
    RawServerConfig::default()
}

/// `a.b.0.c` as the validation messages write it: `a.b[0].c`.
fn list_style_key(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// Removes the value at `path` (numeric segments index lists); whether there was one.
fn remove_at(dict: &mut Dict, path: &[String]) -> bool {
    fn remove_in(value: &mut Value, path: &[String]) -> bool {
        let Some((head, rest)) = path.split_first() else {
            return false;
        };
        match value {
            Value::Dict(_, dict) if rest.is_empty() => dict.remove(head).is_some(),
            Value::Dict(_, dict) => dict
                .get_mut(head)
                .is_some_and(|child| remove_in(child, rest)),
            Value::Array(_, items) => match head.parse::<usize>() {
                Ok(index) if rest.is_empty() && index < items.len() => {
                    items.remove(index);
                    true
                }
                Ok(index) => items
                    .get_mut(index)
                    .is_some_and(|child| remove_in(child, rest)),
                Err(_) => false,
            },
            _ => false,
        }
    }
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return dict.remove(head).is_some();
    }
    dict.get_mut(head)
        .is_some_and(|child| remove_in(child, rest))
}

fn count_leaves(dict: &Dict) -> usize {
    dict.values()
        .map(|value| match value {
            Value::Dict(_, child) => count_leaves(child) + 1,
            _ => 1,
        })
        .sum()
}

/// serde's messages in the shape `expected X, got Y`, without Rust type names.
fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::Message(message) => message.clone(),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {}, got {}",
                describe_expected(expected),
                describe_actual(actual)
            )
        }
        other => other.to_string(),
    }
}

fn describe_expected(expected: &str) -> String {
    if expected.starts_with("struct ") {
        "a section of keys".to_owned()
    } else if expected == "path string" {
        "a path".to_owned()
    } else {
        expected.to_owned()
    }
}

fn describe_actual(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Bool(value) => value.to_string(),
        Actual::Unsigned(value) => value.to_string(),
        Actual::Signed(value) => value.to_string(),
        Actual::Float(value) => value.to_string(),
        Actual::Char(value) => format!("{:?}", value.to_string()),
        Actual::Str(value) => format!("{value:?}"),
        Actual::Map => "a section of keys".to_owned(),
        Actual::Seq => "a list".to_owned(),
        Actual::Unit | Actual::Option => "nothing".to_owned(),
        other => other.to_string(),
    }
}
