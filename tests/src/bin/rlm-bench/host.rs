//! What `load` and `churn` read about the services from the host: memory,
//! descriptors, threads, processes, cgroups and mounts (all from `/proc` and
//! the cgroup file systems; nothing here needs the services' cooperation).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A field of `/proc/<pid>/status` in its unit (kB for the `Vm*` ones).
fn status_field(pid: i32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory (`VmRSS`) in KiB; 0 when the process is gone.
pub fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS:").unwrap_or_default()
}

pub fn threads(pid: i32) -> u64 {
    status_field(pid, "Threads:").unwrap_or_default()
}

/// Open file descriptors (entries of `/proc/<pid>/fd`).
pub fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Lines of `/proc/<pid>/mountinfo` (`pid` None: this process).
pub fn mounts(pid: Option<i32>) -> usize {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/mountinfo"),
        None => "/proc/self/mountinfo".to_owned(),
    };
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Lines of this process's mount table that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map_or(0, |t| t.lines().filter(|l| l.contains(needle)).count())
}

/// `MiB` with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Mount points of every cgroup hierarchy (v1 controllers and cgroup2),
/// from this process's mount table, each once.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut seen = BTreeSet::new();
    table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(point))
        })
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// Directories below `dir` (not counting `dir`), at any depth.
fn dirs_below(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| 1 + dirs_below(&e.path()))
            .sum()
    })
}

/// Session cgroups of the agent whose parent cgroup is `name`: the
/// directories under `<hierarchy>/<name>` in every hierarchy, summed, and
/// the hierarchies that have a `<name>` directory.
pub fn session_cgroups(name: &str) -> (usize, usize) {
    let mut total = 0;
    let mut hierarchies = 0;
    for h in cgroup_hierarchies() {
        let parent = h.join(name);
        if parent.is_dir() {
            hierarchies += 1;
            total += dirs_below(&parent);
        }
    }
    (total, hierarchies)
}

/// `num_cgroups` of the memory controller in `/proc/cgroups`: every memory
/// cgroup on the host, including removed ones the kernel has not freed yet
/// (still charged with page cache or kernel memory). Host-wide.
pub fn memory_num_cgroups() -> u64 {
    std::fs::read_to_string("/proc/cgroups")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&"memory"))
                    .then(|| f.get(2)?.parse().ok())
                    .flatten()
            })
        })
        .unwrap_or_default()
}

/// Live descendants of `root` (processes, not threads).
pub fn descendants(root: i32) -> usize {
    let parents: HashMap<i32, i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let after = stat.get(stat.rfind(')')? + 2..)?;
                    let ppid = after.split(' ').nth(1)?.parse().ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    parents
        .keys()
        .filter(|&&pid| {
            let mut at = pid;
            for _ in 0..64 {
                match parents.get(&at) {
                    Some(&ppid) if ppid == root => return true,
                    Some(&ppid) if ppid > 1 => at = ppid,
                    _ => return false,
                }
            }
            false
        })
        .count()
}

/// Files and directories below `dir`, at any depth.
pub fn entries_below(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                1 + if e.file_type().is_ok_and(|t| t.is_dir()) {
                    entries_below(&e.path())
                } else {
                    0
                }
            })
            .sum()
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (`USER_HZ`,
/// 100 on every Linux architecture this runs on).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) of `pid`, in seconds.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .get(stat.rfind(')').map_or(0, |i| i + 2)..)
        .unwrap_or_default()
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / USER_HZ
}

/// The whole machine's busy CPU time (all CPUs, idle and iowait excluded),
/// in seconds, from `/proc/stat`.
pub fn host_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / USER_HZ
}

/// CPU time charged to the cgroup `name` and everything below it (the
/// agent's sessions, removed ones included), in seconds; None when no
/// hierarchy accounts it.
pub fn cgroup_cpu_seconds(name: &str) -> Option<f64> {
    for h in cgroup_hierarchies() {
        let dir = h.join(name);
        if let Ok(text) = std::fs::read_to_string(dir.join("cpuacct.usage"))
            && let Ok(ns) = text.trim().parse::<u64>()
        {
            return Some(ns as f64 / 1e9);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.stat")) {
            let usec = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(usec) = usec {
                return Some(usec as f64 / 1e6);
            }
        }
    }
    None
}

/// A descendant of this process whose command line contains `marker`.
pub fn own_child_matching(marker: &str) -> Option<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .get(stat.rfind(')').map_or(0, |i| i + 2)..)
                .and_then(|s| s.split(' ').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            ppid == Some(me) && String::from_utf8_lossy(&cmdline).contains(marker)
        })
}

/// TCP sockets of `pid`'s network namespace by inode: how to name them
/// (`tcp listen :P`, `tcp established → :P`, …).
fn tcp_sockets(pid: i32) -> HashMap<String, String> {
    const STATES: [&str; 12] = [
        "?",
        "established",
        "syn-sent",
        "syn-recv",
        "fin-wait1",
        "fin-wait2",
        "time-wait",
        "close",
        "close-wait",
        "last-ack",
        "listen",
        "closing",
    ];
    let mut sockets = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (f.get(1), f.get(2), f.get(3), f.get(9))
            else {
                continue;
            };
            let port = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    .unwrap_or_default()
            };
            let state = usize::from_str_radix(state, 16)
                .ok()
                .and_then(|s| STATES.get(s))
                .unwrap_or(&"?");
            let name = if *state == "listen" {
                format!("tcp listen :{}", port(local))
            } else {
                format!("tcp {state} → :{}", port(remote))
            };
            sockets.insert(format!("socket:[{inode}]"), name);
        }
    }
    sockets
}

/// What the descriptors of `pid` point at, counted by kind (TCP sockets by
/// state and remote port, `socket` for the others, `pipe`,
/// `anon_inode:[eventfd]`, `file`, …), e.g. `30 tcp established → :8080, 4 pipe`.
pub fn fd_kinds(pid: i32) -> String {
    let tcp = tcp_sockets(pid);
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in entries.filter_map(Result::ok) {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let kind = if let Some(name) = tcp.get(&target) {
                name.clone()
            } else if let Some((kind, _)) = target.split_once(":[") {
                if kind == "anon_inode" {
                    target.clone()
                } else {
                    kind.to_owned()
                }
            } else if target.starts_with("/dev/") {
                target.clone()
            } else {
                "file".to_owned()
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    let mut list: Vec<(String, usize)> = kinds.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}
