//! Finding the service binaries: next to the `rlm` executable, else on PATH.

use std::path::{Path, PathBuf};

use crate::exit::Failure;

pub fn binary(name: &str) -> Result<PathBuf, Failure> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    if let Some(path) = beside.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    });
    on_path.ok_or_else(|| {
        Failure::other(format!(
            "cannot find {name} next to {} or on PATH; build the binaries with `cargo build --release --workspace --bins`",
            beside
                .as_deref()
                .and_then(Path::parent)
                .map_or_else(|| "rlm".to_owned(), |d| d.display().to_string())
        ))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_names_missing_ones() {
        assert!(binary("sh").expect("sh on PATH").ends_with("sh"));
        let err = binary("rlm-no-such-binary").expect_err("missing");
        assert!(err.message.contains("cargo build"), "{}", err.message);
    }
}
