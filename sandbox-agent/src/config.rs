//! The agent's settings: flag > environment > TOML file (`--config`) > default.

use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use rlm_common::config::{ConfigError, ServiceArgs, ServiceSettings, Settings};
use rlm_common::listen::{ADDRESS_FORMS, Address};
use rlm_common::tls::{self, TlsFiles};

use crate::session::limits::{Limits, Profile};

/// rlm-sandbox-agent: runs model-written Python in isolated, persistent sessions.
#[derive(Debug, Parser)]
#[command(name = "rlm-sandbox-agent", version)]
pub struct Cli {
    /// TOML file with any of these settings (keys are the long flag names with `_`).
    #[arg(long, env = "RLM_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<String>,
    /// Listen address [default: unix:///run/rlm/sandbox.sock].
    #[arg(long, env = "RLM_AGENT_LISTEN", value_name = "ADDRESS")]
    pub listen: Option<String>,
    /// Permission bits of the Unix socket, octal [default: 600].
    #[arg(long, env = "RLM_AGENT_SOCKET_MODE", value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// Directory for the agent's state: stored contexts [default: /var/lib/rlm-agent].
    #[arg(long, env = "RLM_AGENT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Largest context accepted by PutContext, in bytes [default: 1073741824].
    #[arg(long, env = "RLM_AGENT_MAX_CONTEXT_BYTES", value_name = "BYTES")]
    pub max_context_bytes: Option<String>,
    /// Session isolation: full (namespaces, cgroups, seccomp; needs root) or none (development only, unsafe) [default: full].
    #[arg(long, env = "RLM_AGENT_ISOLATION", value_name = "full|none")]
    pub isolation: Option<String>,
    /// Python interpreter the sessions run [default: /usr/bin/python3].
    #[arg(long, env = "RLM_AGENT_PYTHON", value_name = "PATH")]
    pub python: Option<String>,
    /// Warm-pool size for the default limits profile [default: 4].
    #[arg(long, env = "RLM_AGENT_POOL_SIZE", value_name = "N")]
    pub pool_size: Option<String>,
    /// More warm pools: `mem=MiB,cpu=MILLICORES,pids=N,tmp=MiB:SIZE` entries separated by `;`
    /// (unnamed fields take the defaults) [default: none].
    #[arg(long, env = "RLM_AGENT_POOL_PROFILES", value_name = "PROFILES")]
    pub pool_profiles: Option<String>,
    /// Most live sessions at once [default: 256].
    #[arg(long, env = "RLM_AGENT_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<String>,
    /// Range of dedicated session uids, FIRST-LAST [default: 200000-265535].
    #[arg(long, env = "RLM_AGENT_UID_RANGE", value_name = "FIRST-LAST")]
    pub uid_range: Option<String>,
    /// Allow sessions that ask for network access (unsafe) [default: false].
    #[arg(long, env = "RLM_AGENT_ALLOW_NETWORK", value_name = "BOOL")]
    pub allow_network: Option<String>,
    /// Comma-separated host path prefixes sessions may mount via allowed_paths [default: none].
    #[arg(long, env = "RLM_AGENT_ALLOWED_PATHS", value_name = "PATHS")]
    pub allowed_paths: Option<String>,
    /// Name of the cgroup under which session cgroups are created [default: rlm-sandbox].
    #[arg(long, env = "RLM_AGENT_CGROUP", value_name = "NAME")]
    pub cgroup: Option<String>,
    /// PEM certificate for TLS on a tcp:// listener (with --tls-key and --tls-client-ca).
    #[arg(long, env = "RLM_AGENT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key of that certificate.
    #[arg(long, env = "RLM_AGENT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// PEM CA that signs the orchestrators' client certificates (mutual TLS).
    #[arg(long, env = "RLM_AGENT_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// Serve plaintext on a tcp:// listener (unsafe outside a trusted network) [default: false].
    #[arg(long, env = "RLM_AGENT_INSECURE_TCP", value_name = "BOOL")]
    pub insecure_tcp: Option<String>,
    /// Comma-separated uids allowed to call over the Unix socket (checked with SO_PEERCRED)
    /// [default: the agent's own uid].
    #[arg(long, env = "RLM_AGENT_ALLOWED_UIDS", value_name = "UIDS")]
    pub allowed_uids: Option<String>,
    /// Comma-separated Python modules every session imports right after it is
    /// ready (paid in the warm pool, not in the cell that needs them) [default: os,re,json].
    #[arg(long, env = "RLM_AGENT_PRELOAD", value_name = "MODULES")]
    pub preload: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationChoice {
    Full,
    None,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Address,
    pub socket_mode: u32,
    pub data_dir: PathBuf,
    pub max_context_bytes: u64,
    pub isolation: IsolationChoice,
    pub python: PathBuf,
    pub pool_size: usize,
    pub pool_profiles: Vec<(Profile, usize)>,
    pub max_sessions: usize,
    pub uid_range: (u32, u32),
    pub allow_network: bool,
    pub allowed_path_prefixes: Vec<PathBuf>,
    pub cgroup: String,
    /// Mutual TLS on a tcp:// listener; `None` on a Unix socket, or on TCP
    /// when plaintext was explicitly allowed.
    pub tls: Option<TlsFiles>,
    /// Uids that may call over the Unix socket.
    pub allowed_uids: Vec<u32>,
    /// Modules sessions import before they are ready.
    pub preload: Vec<String>,
    pub service: ServiceSettings,
}

/// A tcp:// listener needs mutual TLS unless plaintext is explicitly allowed.
fn listener_tls(
    settings: &Settings<'_>,
    listen: &Address,
) -> Result<Option<TlsFiles>, ConfigError> {
    let files = tls::resolve(settings, "tls_cert", "tls_key", Some("tls_client_ca"))?;
    let insecure = settings.get("insecure_tcp", "false", "true, false", parse_bool)?;
    match (listen, files) {
        (Address::Unix(_), _) => Ok(None),
        (Address::Tcp(_), Some(files)) if files.ca.is_some() => Ok(Some(files)),
        (Address::Tcp(_), _) if insecure => Ok(None),
        (Address::Tcp(addr), _) => settings.get("listen", "", ADDRESS_FORMS, |_| {
            Err(format!(
                "tcp://{addr} needs mutual TLS: set RLM_AGENT_TLS_CERT, RLM_AGENT_TLS_KEY and \
                 RLM_AGENT_TLS_CLIENT_CA (or RLM_AGENT_INSECURE_TCP=true on a trusted network)"
            ))
        }),
    }
}

fn parse_count(max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("not a whole number from 0 to {max}"))
    }
}

fn parse_absolute(v: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(v);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err("must be absolute".to_owned())
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean".to_owned()),
    }
}

impl Config {
    /// Parses the process's arguments and environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        rlm_common::config::load(Cli::command(), Self::resolve)
    }

    fn resolve(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let listen = settings.get(
            "listen",
            "unix:///run/rlm/sandbox.sock",
            ADDRESS_FORMS,
            Address::parse,
        )?;
        Ok(Self {
            preload: settings.get(
                "preload",
                "os,re,json",
                "comma-separated module names such as re,json (empty for none)",
                |v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(|m| {
                            let valid = m.split('.').all(|part| {
                                part.chars()
                                    .next()
                                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            });
                            if valid {
                                Ok(m.to_owned())
                            } else {
                                Err(format!("{m:?} is not a module name"))
                            }
                        })
                        .collect()
                },
            )?,
            tls: listener_tls(settings, &listen)?,
            listen,
            allowed_uids: settings.get("allowed_uids", "", "comma-separated uids", |v| {
                let uids: Result<Vec<u32>, String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| u.parse().map_err(|_| format!("{u} is not a uid")))
                    .collect();
                let uids = uids?;
                Ok(if uids.is_empty() {
                    vec![nix::unistd::geteuid().as_raw()]
                } else {
                    uids
                })
            })?,
            socket_mode: settings.get(
                "socket_mode",
                "600",
                "octal permission bits such as 600 or 660",
                |v| {
                    u32::from_str_radix(v.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|mode| *mode <= 0o777)
                        .ok_or_else(|| "not an octal mode".to_owned())
                },
            )?,
            data_dir: settings.get(
                "data_dir",
                "/var/lib/rlm-agent",
                "an absolute directory path",
                parse_absolute,
            )?,
            max_context_bytes: settings.get(
                "max_context_bytes",
                "1073741824",
                "a byte count from 1 to 2^40",
                |v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| (1..=1 << 40).contains(n))
                        .ok_or_else(|| "not a byte count in range".to_owned())
                },
            )?,
            isolation: settings.get("isolation", "full", "full, none", |v| match v {
                "full" => Ok(IsolationChoice::Full),
                "none" => Ok(IsolationChoice::None),
                _ => Err("unknown isolation mode".to_owned()),
            })?,
            python: settings.get(
                "python",
                "/usr/bin/python3",
                "an absolute path to a python3 executable",
                parse_absolute,
            )?,
            pool_size: settings.get(
                "pool_size",
                "4",
                "a whole number from 0 to 256",
                parse_count(256),
            )?,
            pool_profiles: settings.get(
                "pool_profiles",
                "",
                "`mem=MiB,cpu=MILLICORES,pids=N,tmp=MiB:SIZE` entries separated by `;`",
                parse_pool_profiles,
            )?,
            max_sessions: settings.get(
                "max_sessions",
                "256",
                "a whole number from 1 to 65536",
                |v| {
                    parse_count(65_536)(v).and_then(|n| {
                        if n == 0 {
                            Err("must be at least 1".to_owned())
                        } else {
                            Ok(n)
                        }
                    })
                },
            )?,
            uid_range: settings.get(
                "uid_range",
                "200000-265535",
                "FIRST-LAST with 0 < FIRST <= LAST",
                |v| {
                    let (first, last) = v.split_once('-').ok_or("missing `-`")?;
                    let first: u32 = first.trim().parse().map_err(|_| "FIRST is not a number")?;
                    let last: u32 = last.trim().parse().map_err(|_| "LAST is not a number")?;
                    if first == 0 || last < first {
                        return Err("need 0 < FIRST <= LAST".to_owned());
                    }
                    Ok((first, last - first + 1))
                },
            )?,
            allow_network: settings.get("allow_network", "false", "true, false", parse_bool)?,
            allowed_path_prefixes: settings.get(
                "allowed_paths",
                "",
                "comma-separated absolute paths",
                |v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| parse_absolute(p).map_err(|_| format!("{p} is not absolute")))
                        .collect()
                },
            )?,
            cgroup: settings.get(
                "cgroup",
                "rlm-sandbox",
                "a name of letters, digits, - and _",
                |v| {
                    if !v.is_empty()
                        && v.len() <= 64
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        Ok(v.to_owned())
                    } else {
                        Err("not a plain name".to_owned())
                    }
                },
            )?,
            service: ServiceSettings::resolve(settings)?,
        })
    }
}

/// Parses `RLM_AGENT_POOL_PROFILES`.
fn parse_pool_profiles(text: &str) -> Result<Vec<(Profile, usize)>, String> {
    const MIB: u64 = 1 << 20;
    let mut profiles = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (fields, size) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("`{entry}` has no `:SIZE`"))?;
        let size = parse_count(256)(size.trim())?;
        let mut profile = Limits::default().profile();
        for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("`{field}` is not KEY=VALUE"))?;
            let number: u64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` in `{field}` is not a number"))?;
            match key.trim() {
                "mem" => profile.memory_bytes = number * MIB,
                "cpu" => {
                    profile.cpu_millicores = u32::try_from(number).map_err(|_| "cpu too large")?
                }
                "pids" => profile.max_pids = u32::try_from(number).map_err(|_| "pids too large")?,
                "tmp" => profile.tmpfs_bytes = number * MIB,
                other => return Err(format!("unknown field `{other}` (mem, cpu, pids, tmp)")),
            }
        }
        if profile.memory_bytes < 32 * MIB
            || profile.tmpfs_bytes > profile.memory_bytes
            || !(10..=64_000).contains(&profile.cpu_millicores)
            || !(8..=4096).contains(&profile.max_pids)
        {
            return Err(format!("`{entry}` is outside the session limits' ranges"));
        }
        profiles.push((profile, size));
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_profiles_parse_with_defaults_and_reject_nonsense() {
        let parsed = parse_pool_profiles("mem=256,cpu=500:2; pids=128:1").expect("valid");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0.name(), "mem256Mi-cpu500m-pids64-tmp64Mi");
        assert_eq!(parsed[0].1, 2);
        assert_eq!(parsed[1].0.name(), "mem512Mi-cpu1000m-pids128-tmp64Mi");
        assert!(parse_pool_profiles("").expect("empty").is_empty());
        for bad in ["mem=256", "mem=1:1", "gpu=1:1", "mem=x:1", "pids=2:1"] {
            assert!(parse_pool_profiles(bad).is_err(), "{bad}");
        }
    }
}
