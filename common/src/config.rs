//! Layered configuration: command-line flag > environment variable > TOML file > default.
//!
//! Each binary declares its settings once, as clap arguments carrying `long` and `env`.
//! clap already orders flag over environment; this module adds the file and the
//! default layers, and turns a bad value into an error naming where it came from
//! and what is accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;

/// Where a setting's value came from; shown in error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    Env(String),
    File { key: String, path: PathBuf },
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File { key, path } => write!(f, "key `{key}` in {}", path.display()),
            Origin::Default => write!(f, "built-in default"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(Box<InvalidValue>),
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {} has unknown key `{key}`; known keys: {known}", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("config file {}: key `{key}` must be a string, number or boolean", path.display())]
    NotScalar { path: PathBuf, key: String },
}

/// A setting whose value does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {setting} (from {origin}): {reason}; accepted: {accepted}")]
pub struct InvalidValue {
    pub setting: String,
    pub value: String,
    pub origin: Origin,
    pub reason: String,
    pub accepted: String,
}

/// The values of a TOML config file: a flat table whose keys are the long flag
/// names with `-` written as `_` (e.g. `http_listen` for `--http-listen`).
#[derive(Debug, Default)]
pub struct FileLayer {
    path: PathBuf,
    values: BTreeMap<String, String>,
}

impl FileLayer {
    /// Reads `path`; every key must name one of `known_keys`.
    pub fn load(path: &Path, known_keys: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            if !known_keys.contains(&key) {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key,
                    known: known_keys.join(", "),
                });
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(ConfigError::NotScalar {
                        path: path.to_owned(),
                        key,
                    });
                }
            };
            values.insert(key, text);
        }
        Ok(Self {
            path: path.to_owned(),
            values,
        })
    }
}

/// Resolves settings declared as clap arguments (ids in snake_case, values as `String`).
#[derive(Debug)]
pub struct Settings<'a> {
    matches: &'a ArgMatches,
    command: &'a clap::Command,
    file: FileLayer,
}

impl<'a> Settings<'a> {
    /// `config_arg` is the id of the argument holding the optional TOML file path.
    pub fn new(
        command: &'a clap::Command,
        matches: &'a ArgMatches,
        config_arg: &str,
    ) -> Result<Self, ConfigError> {
        let file = match matches.get_one::<String>(config_arg) {
            Some(path) => {
                let known: Vec<String> = command
                    .get_arguments()
                    .filter(|arg| arg.get_long().is_some() && arg.get_id() != config_arg)
                    .map(|arg| arg.get_id().as_str().to_owned())
                    .collect();
                FileLayer::load(Path::new(path), &known)?
            }
            None => FileLayer::default(),
        };
        Ok(Self {
            matches,
            command,
            file,
        })
    }

    /// The raw value of setting `id` and where it came from, or the default.
    pub fn raw(&self, id: &str, default: &str) -> (String, Origin) {
        if let Some(value) = self.matches.get_one::<String>(id) {
            let arg = self.command.get_arguments().find(|arg| arg.get_id() == id);
            let origin = match self.matches.value_source(id) {
                Some(ValueSource::EnvVariable) => Origin::Env(
                    arg.and_then(|a| a.get_env())
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => Origin::Flag(arg.and_then(|a| a.get_long()).unwrap_or(id).to_owned()),
            };
            return (value.clone(), origin);
        }
        if let Some(value) = self.file.values.get(id) {
            return (
                value.clone(),
                Origin::File {
                    key: id.to_owned(),
                    path: self.file.path.clone(),
                },
            );
        }
        (default.to_owned(), Origin::Default)
    }

    /// Resolves setting `id` and parses it; a parse failure names the setting's
    /// environment variable, where the value came from, and `accepted`.
    pub fn get<T>(
        &self,
        id: &str,
        default: &str,
        accepted: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, origin) = self.raw(id, default);
        parse(&value).map_err(|reason| {
            ConfigError::Invalid(Box::new(InvalidValue {
                setting: self.display_name(id),
                value,
                origin,
                reason,
                accepted: accepted.to_owned(),
            }))
        })
    }

    /// How setting `id` is named to users: `ENV_VAR (--flag)`.
    pub fn display_name(&self, id: &str) -> String {
        let arg = self.command.get_arguments().find(|arg| arg.get_id() == id);
        match (
            arg.and_then(|a| a.get_env()),
            arg.and_then(|a| a.get_long()),
        ) {
            (Some(env), Some(long)) => format!("{} (--{long})", env.to_string_lossy()),
            (Some(env), None) => env.to_string_lossy().into_owned(),
            (None, Some(long)) => format!("--{long}"),
            (None, None) => id.to_owned(),
        }
    }
}

/// Parses the process's arguments and environment with `command` (whose
/// `--config` argument names the TOML file) and resolves the settings.
pub fn load<T>(
    command: clap::Command,
    resolve: impl FnOnce(&Settings<'_>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let matches = command.clone().get_matches();
    let settings = Settings::new(&command, &matches, "config")?;
    resolve(&settings)
}

/// Parses a duration written as whole seconds (`30`) or with a unit: `250ms`, `30s`, `5m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("unknown unit `{other}`")),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err("must be between 0 and 24h".to_owned());
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("config").long("config"))
            .arg(Arg::new("listen").long("listen").env("RLM_TEST_CFG_LISTEN"))
            .arg(
                Arg::new("http_listen")
                    .long("http-listen")
                    .env("RLM_TEST_CFG_HTTP_LISTEN"),
            )
    }

    #[test]
    fn file_fills_what_flags_and_env_leave_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"file:1\"\nhttp_listen = \"file:2\"\n").expect("write");
        let cmd = command();
        let matches = cmd
            .clone()
            .try_get_matches_from([
                "t",
                "--config",
                path.to_str().expect("utf8"),
                "--listen",
                "flag:1",
            ])
            .expect("matches");
        let settings = Settings::new(&cmd, &matches, "config").expect("settings");
        assert_eq!(settings.raw("listen", "d").0, "flag:1");
        let (value, origin) = settings.raw("http_listen", "d");
        assert_eq!(value, "file:2");
        assert!(matches!(origin, Origin::File { .. }));
    }

    #[test]
    fn unknown_file_key_is_rejected_with_the_known_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let cmd = command();
        let matches = cmd
            .clone()
            .try_get_matches_from(["t", "--config", path.to_str().expect("utf8")])
            .expect("matches");
        let err = Settings::new(&cmd, &matches, "config").expect_err("error");
        let text = err.to_string();
        assert!(
            text.contains("lisen") && text.contains("http_listen"),
            "{text}"
        );
    }

    #[test]
    fn invalid_value_names_variable_origin_and_accepted_forms() {
        let cmd = command();
        let matches = cmd
            .clone()
            .try_get_matches_from(["t", "--listen", "nope"])
            .expect("matches");
        let settings = Settings::new(&cmd, &matches, "config").expect("settings");
        let err = settings
            .get("listen", "x", "HOST:PORT", |v| {
                v.parse::<std::net::SocketAddr>().map_err(|e| e.to_string())
            })
            .expect_err("error");
        let text = err.to_string();
        assert!(text.contains("RLM_TEST_CFG_LISTEN"), "{text}");
        assert!(text.contains("flag --listen"), "{text}");
        assert!(text.contains("HOST:PORT"), "{text}");
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("30").expect("ok").as_secs(), 30);
        assert_eq!(parse_duration("250ms").expect("ok").as_millis(), 250);
        assert_eq!(parse_duration("2m").expect("ok").as_secs(), 120);
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1").is_err());
    }
}

/// Settings every RLM server takes, flattened into each binary's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Log line format: text or json.
    #[arg(long, env = "RLM_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
    /// After SIGTERM/SIGINT, how long health reports NOT_SERVING before the listener closes.
    #[arg(long, env = "RLM_SHUTDOWN_ANNOUNCE", value_name = "DURATION")]
    pub shutdown_announce: Option<String>,
    /// How long in-flight calls may run after the listener closes.
    #[arg(long, env = "RLM_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
}

/// Resolved [`ServiceArgs`].
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub log_format: crate::telemetry::LogFormat,
    pub drain: crate::server::DrainPolicy,
}

const DURATION_FORMS: &str =
    "seconds (30) or a number with ms, s or m (250ms, 30s, 2m), at most 24h";

impl ServiceSettings {
    pub fn resolve(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            log_format: settings.get(
                "log_format",
                "text",
                "text, json",
                crate::telemetry::LogFormat::parse,
            )?,
            drain: crate::server::DrainPolicy {
                announce: settings.get(
                    "shutdown_announce",
                    "1s",
                    DURATION_FORMS,
                    parse_duration,
                )?,
                deadline: settings.get("drain_timeout", "30s", DURATION_FORMS, parse_duration)?,
            },
        })
    }
}
