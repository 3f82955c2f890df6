//! Command-line flags of the subcommands: `--name value`, `--name=value` and
//! bare switches; anything else is refused.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

pub struct Args {
    values: HashMap<String, String>,
    switches: Vec<String>,
}

impl Args {
    /// `options` take a value, `switches` do not.
    pub fn parse(argv: &[String], options: &[&str], switches: &[&str]) -> anyhow::Result<Self> {
        let mut parsed = Self {
            values: HashMap::new(),
            switches: Vec::new(),
        };
        let mut rest = argv.iter();
        while let Some(arg) = rest.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            if switches.contains(&name) && inline.is_none() {
                parsed.switches.push(name.to_owned());
            } else if options.contains(&name) {
                let value = match inline {
                    Some(value) => value,
                    None => rest
                        .next()
                        .with_context(|| format!("{name} takes a value"))?
                        .clone(),
                };
                parsed.values.insert(name.to_owned(), value);
            } else {
                bail!(
                    "unknown argument {arg:?} (options: {}; switches: {})",
                    options.join(", "),
                    if switches.is_empty() {
                        "none".to_owned()
                    } else {
                        switches.join(", ")
                    }
                );
            }
        }
        Ok(parsed)
    }

    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn given(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The value of `name` as given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name` parsed as a number, or `default`.
    pub fn number<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.values.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| anyhow::anyhow!("{name} takes a number, not {text:?}")),
        }
    }

    /// The value of `name` as a duration (`300s`, `5m`, `250ms`; a bare
    /// number is seconds), or `default`.
    pub fn duration(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        match self.values.get(name) {
            None => Ok(default),
            Some(text) => rlm_common::config::parse_duration(text)
                .map_err(|err| anyhow::anyhow!("{name} {text:?}: {err}")),
        }
    }
}
