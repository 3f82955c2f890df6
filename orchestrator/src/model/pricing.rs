//! Model prices (USD per million tokens) and the cost of a call.
//!
//! Keys are `provider/model` as in [`ModelRef`]'s display form. A file
//! (JSON, or TOML when its name ends in `.toml`) maps keys to prices:
//!
//! ```toml
//! ["openai/gpt-4o"]
//! input = 2.5
//! output = 10.0
//! ```
//!
//! JSON: `{"openai/gpt-4o": {"input": 2.5, "output": 10.0}}`.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{ModelRef, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Price {
    /// USD per million input tokens.
    #[serde(rename = "input")]
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    #[serde(rename = "output")]
    pub output_per_mtok: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read price file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse price file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("price file {path}: `{model}` has a negative or non-finite price")]
    Invalid { path: String, model: String },
}

/// Prices by `provider/model`. `Default` is empty (every cost unknown).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

/// ILLUSTRATIVE DEFAULTS: list prices as published around late 2025, for
/// demos and sane out-of-the-box budgets. They go stale; deployments that
/// bill on them should load their own table ([`PriceTable::load`]).
const BUILTIN: &[(&str, f64, f64)] = &[
    ("openai/gpt-4o", 2.50, 10.00),
    ("openai/gpt-4o-mini", 0.15, 0.60),
    ("openai/gpt-4.1", 2.00, 8.00),
    ("openai/gpt-4.1-mini", 0.40, 1.60),
    ("openai/gpt-5", 1.25, 10.00),
    ("openai/gpt-5-mini", 0.25, 2.00),
    ("anthropic/claude-sonnet-4-5", 3.00, 15.00),
    ("anthropic/claude-haiku-4-5", 1.00, 5.00),
    ("anthropic/claude-opus-4-1", 15.00, 75.00),
];

impl PriceTable {
    /// The illustrative built-in table: late-2025 list prices, not authoritative.
    pub fn builtin() -> Self {
        let prices = BUILTIN
            .iter()
            .map(|&(key, input, output)| {
                (
                    key.to_owned(),
                    Price {
                        input_per_mtok: input,
                        output_per_mtok: output,
                    },
                )
            })
            .collect();
        Self { prices }
    }

    /// A table read from `path` alone (JSON, or TOML for `*.toml`).
    pub fn from_file(path: &Path) -> Result<Self, PricingError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: shown.clone(),
            source,
        })?;
        let is_toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let prices: HashMap<String, Price> = if is_toml {
            toml::from_str(&text).map_err(|e| PricingError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?
        } else {
            serde_json::from_str(&text).map_err(|e| PricingError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?
        };
        let valid = |v: f64| v.is_finite() && v >= 0.0;
        if let Some((model, _)) = prices
            .iter()
            .find(|(_, p)| !valid(p.input_per_mtok) || !valid(p.output_per_mtok))
        {
            return Err(PricingError::Invalid {
                path: shown,
                model: model.clone(),
            });
        }
        Ok(Self { prices })
    }

    /// The built-in table overridden (per model) by the file at `path`.
    pub fn load(path: &Path) -> Result<Self, PricingError> {
        Ok(Self::builtin().merged(Self::from_file(path)?))
    }

    /// `self` with every entry of `overrides` set on top.
    pub fn merged(mut self, overrides: PriceTable) -> Self {
        self.prices.extend(overrides.prices);
        self
    }

    pub fn insert(&mut self, model: impl Into<String>, price: Price) {
        self.prices.insert(model.into(), price);
    }

    /// The price of `key` (`provider/model`).
    pub fn get(&self, key: &str) -> Option<Price> {
        self.prices.get(key).copied()
    }

    /// The cost of `usage` on `model`; `None` when the price is unknown.
    pub fn cost(&self, model: &ModelRef, usage: Usage) -> Option<f64> {
        let price = self.get(&model.to_string())?;
        Some(
            usage.input_tokens as f64 * price.input_per_mtok / 1e6
                + usage.output_tokens as f64 * price.output_per_mtok / 1e6,
        )
    }

    /// The provider's reported cost when there is one, else [`Self::cost`].
    pub fn cost_or_reported(
        &self,
        model: &ModelRef,
        usage: Usage,
        reported: Option<f64>,
    ) -> Option<f64> {
        reported.or_else(|| self.cost(model, usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(s: &str) -> ModelRef {
        s.parse().expect("model ref")
    }

    #[test]
    fn cost_from_table_unknown_is_none() {
        let table = PriceTable::builtin();
        let usage = Usage {
            input_tokens: 2_000_000,
            output_tokens: 1_000_000,
        };
        let cost = table.cost(&model("openai/gpt-4o"), usage).expect("known");
        assert!((cost - (2.0 * 2.5 + 10.0)).abs() < 1e-9);
        // A bare name is the default provider.
        assert_eq!(table.cost(&model("gpt-4o"), usage), Some(cost));
        assert_eq!(table.cost(&model("openai/my-finetune"), usage), None);
        assert_eq!(table.cost(&model("scripted:/tmp/x"), usage), None);
        assert_eq!(
            table.cost_or_reported(&model("openai/gpt-4o"), usage, Some(0.5)),
            Some(0.5)
        );
    }

    #[test]
    fn loads_json_and_toml_overrides() {
        let dir = std::env::temp_dir().join(format!("rlm-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let json = dir.join("prices.json");
        std::fs::write(&json, r#"{"openai/gpt-4o": {"input": 1.0, "output": 2.0}, "openai/local": {"input": 0, "output": 0}}"#)
            .expect("write json");
        let toml_path = dir.join("prices.toml");
        std::fs::write(&toml_path, "[\"anthropic/x\"]\ninput = 3.0\noutput = 4.0\n")
            .expect("write toml");

        let table = PriceTable::load(&json).expect("json");
        assert_eq!(
            table.get("openai/gpt-4o"),
            Some(Price {
                input_per_mtok: 1.0,
                output_per_mtok: 2.0
            })
        );
        assert!(
            table.get("anthropic/claude-sonnet-4-5").is_some(),
            "builtins kept"
        );
        // An explicit zero price is a real 0, unlike an unknown price.
        assert_eq!(
            table.cost(
                &model("openai/local"),
                Usage {
                    input_tokens: 5,
                    output_tokens: 5
                }
            ),
            Some(0.0)
        );

        let table = PriceTable::from_file(&toml_path).expect("toml");
        assert_eq!(
            table.get("anthropic/x"),
            Some(Price {
                input_per_mtok: 3.0,
                output_per_mtok: 4.0
            })
        );
        assert_eq!(table.get("openai/gpt-4o"), None);

        std::fs::write(&json, r#"{"openai/a": {"input": -1, "output": 0}}"#).expect("write bad");
        assert!(
            matches!(PriceTable::from_file(&json), Err(PricingError::Invalid { model, .. }) if model == "openai/a")
        );
        std::fs::write(&json, "{").expect("write broken");
        let err = PriceTable::from_file(&json).expect_err("broken");
        assert!(err.to_string().contains("prices.json"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
