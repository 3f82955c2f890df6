//! What full isolation needs from the host, checked before the agent serves:
//! the agent refuses to start with a list of exactly what is missing rather
//! than run sessions with less isolation than it reports.

use std::path::Path;

/// Problems that make full isolation impossible on this host.
pub fn missing(python: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (or CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID): the agent runs as an unprivileged user".to_owned());
    }
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            missing.push(format!("{ns} namespaces (no /proc/self/ns/{ns})"));
        }
    }
    match std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") {
        Ok(actions) if actions.split_whitespace().any(|a| a == "errno") => {}
        _ => missing.push(
            "seccomp filters with the errno action (/proc/sys/kernel/seccomp/actions_avail)"
                .to_owned(),
        ),
    }
    if !python.is_file() {
        missing.push(format!(
            "the session Python {} (set RLM_AGENT_PYTHON)",
            python.display()
        ));
    }
    missing
}

/// The installation prefix to bind into sessions when Python lives outside /usr.
pub fn python_prefix(python: &Path) -> Option<std::path::PathBuf> {
    let real = std::fs::canonicalize(python).ok()?;
    if real.starts_with("/usr") || real.starts_with("/bin") || real.starts_with("/lib") {
        return None;
    }
    // <prefix>/bin/python3.x
    real.parent()?.parent().map(Path::to_owned)
}
