//! Records the git commit the binary is built from, for `switchyard --version`: the short hash from
//! `git rev-parse`, `SWITCHYARD_GIT_COMMIT` when set (builds without a `.git`, e.g. a Docker context),
//! else "unknown". Reruns when HEAD moves (a checkout, or a commit on the current branch).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHYARD_GIT_COMMIT");
    let commit = std::env::var("SWITCHYARD_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = commit.or_else(|| {
        // In a worktree HEAD lives in its own git dir and branch refs in the common one.
        if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
            println!("cargo:rerun-if-changed={dir}/HEAD");
        }
        if let (Some(common), Some(head_ref)) =
            (git(&["rev-parse", "--git-common-dir"]), git(&["symbolic-ref", "-q", "HEAD"]))
        {
            println!("cargo:rerun-if-changed={common}/{head_ref}");
            // A file that does not exist would make cargo rerun this (and rebuild the crate) every time.
            if std::path::Path::new(&format!("{common}/packed-refs")).exists() {
                println!("cargo:rerun-if-changed={common}/packed-refs");
            }
        }
        git(&["rev-parse", "--short", "HEAD"])
    });
    println!("cargo:rustc-env=SWITCHYARD_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
