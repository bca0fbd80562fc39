//! `include = [...]`: which files a pattern names. A pattern is a path relative
//! to the including file's directory (or absolute) whose components may be
//! globs (`*`, `?`, `[...]`) and whose `**` stands for any run of directories.
//!
//! The walk is bounded, so that `include = ["/**/*.toml"]` is refused with an
//! error naming it instead of reading the whole file system: at most
//! `MAX_FILES` files per pattern, `**` at most `MAX_DEPTH` directories deep,
//! and at most `MAX_ENTRIES` directory entries looked at. Files are returned
//! sorted, each once; de-duplicating across patterns and against the main file
//! (by canonical path) is the loader's part.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::{ConfigError, Located};

/// The most files one pattern may name.
pub(super) const MAX_FILES: usize = 1000;
/// How many directories deep `**` may reach below where it stands.
pub(super) const MAX_DEPTH: usize = 8;
/// The most directory entries one pattern's walk may look at.
pub(super) const MAX_ENTRIES: usize = 20_000;

/// One component of a pattern.
enum Part {
    Literal(OsString),
    Glob(glob::Pattern),
    /// `**`: zero or more directories.
    AnyDirs,
}

/// Why a walk stopped early.
enum Stop {
    Files,
    Depth(PathBuf),
    Entries,
}

struct Walk {
    files: BTreeSet<PathBuf>,
    entries: usize,
    /// Directories that could not be listed, with the reason.
    unreadable: Vec<(PathBuf, std::io::Error)>,
}

/// The files `pattern` names, relative to `base_dir`; problems go to `errors`
/// at `at`.
pub(super) fn expand(
    base_dir: &Path,
    pattern: &str,
    at: &Located,
    errors: &mut Vec<ConfigError>,
) -> Vec<PathBuf> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base_dir.join(pattern)
    };
    let wildcard = pattern.contains(['*', '?', '[']);
    if !wildcard {
        // A plain path: loading it says what is wrong with it (a FIFO, a
        // directory), unless it is not there at all.
        if std::fs::symlink_metadata(&full).is_err() {
            errors.push(at.error(format!("included file {} does not exist", full.display())));
            return Vec::new();
        }
        return vec![full];
    }
    let (start, parts) = match split(&full) {
        Ok(split) => split,
        Err(e) => {
            errors.push(at.error(format!("invalid glob `{pattern}`: {e}")));
            return Vec::new();
        }
    };
    let mut walk = Walk {
        files: BTreeSet::new(),
        entries: 0,
        unreadable: Vec::new(),
    };
    match walk.parts(&start, &parts, 0) {
        Ok(()) => {}
        Err(Stop::Files) => {
            errors.push(at.error(format!(
                "include `{pattern}` names more than {MAX_FILES} files: name fewer"
            )));
            return Vec::new();
        }
        Err(Stop::Depth(dir)) => {
            errors.push(at.error(format!(
                "include `{pattern}` reaches more than {MAX_DEPTH} directories deep (at {}): \
                 start it from the directory that holds the files",
                dir.display()
            )));
            return Vec::new();
        }
        Err(Stop::Entries) => {
            errors.push(at.error(format!(
                "include `{pattern}` walks more than {MAX_ENTRIES} directory entries: \
                 start it from the directory that holds the files"
            )));
            return Vec::new();
        }
    }
    for (dir, e) in walk.unreadable {
        errors.push(at.error(format!(
            "cannot read {}: {}",
            dir.display(),
            crate::file::io_reason(&e)
        )));
    }
    walk.files.into_iter().collect()
}

/// The literal directory a pattern starts from and its remaining parts.
fn split(full: &Path) -> Result<(PathBuf, Vec<Part>), glob::PatternError> {
    let mut start = PathBuf::new();
    let mut parts = Vec::new();
    for c in full.components() {
        let text = c.as_os_str().to_string_lossy();
        let glob = matches!(c, Component::Normal(_)) && text.contains(['*', '?', '[']);
        if parts.is_empty() && !glob {
            start.push(c);
        } else if text == "**" {
            parts.push(Part::AnyDirs);
        } else if glob {
            parts.push(Part::Glob(glob::Pattern::new(&text)?));
        } else {
            parts.push(Part::Literal(c.as_os_str().to_os_string()));
        }
    }
    Ok((start, parts))
}

impl Walk {
    /// Matches `parts` below `dir`; `depth` counts the directories `**` went down.
    fn parts(&mut self, dir: &Path, parts: &[Part], depth: usize) -> Result<(), Stop> {
        let Some((first, rest)) = parts.split_first() else {
            return Ok(());
        };
        match first {
            Part::Literal(name) => self.found(&dir.join(name), rest, depth),
            Part::Glob(pattern) => {
                for path in self.list(dir)? {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    if name.is_some_and(|n| pattern.matches(&n)) {
                        self.found(&path, rest, depth)?;
                    }
                }
                Ok(())
            }
            Part::AnyDirs => {
                // Zero directories here, then one more and `**` again.
                self.parts(dir, rest, depth)?;
                for path in self.list(dir)? {
                    if path.is_dir() {
                        if depth + 1 > MAX_DEPTH {
                            return Err(Stop::Depth(path));
                        }
                        self.parts(&path, parts, depth + 1)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// `path` matched a component: a file when it was the last, else a
    /// directory to go on in.
    fn found(&mut self, path: &Path, rest: &[Part], depth: usize) -> Result<(), Stop> {
        if rest.is_empty() {
            if path.is_file() {
                self.files.insert(path.to_path_buf());
                if self.files.len() > MAX_FILES {
                    return Err(Stop::Files);
                }
            }
            Ok(())
        } else if path.is_dir() {
            self.parts(path, rest, depth)
        } else {
            Ok(())
        }
    }

    /// The entries of `dir`, sorted; an unreadable directory is noted once and
    /// yields nothing.
    fn list(&mut self, dir: &Path) -> Result<Vec<PathBuf>, Stop> {
        let read = match std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            Ok(read) => read,
            Err(e) => {
                if dir.is_dir() {
                    self.unreadable.push((dir.to_path_buf(), e));
                }
                return Ok(Vec::new());
            }
        };
        let mut paths = Vec::new();
        for entry in read.flatten() {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(Stop::Entries);
            }
            paths.push(dir.join(entry.file_name()));
        }
        paths.sort();
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Located {
        Located {
            file: Path::new("sonde.toml").into(),
            line: 1,
            column: 12,
            key: "include[0]".into(),
        }
    }

    fn names(base: &Path, pattern: &str) -> Result<Vec<String>, Vec<String>> {
        let mut errors = Vec::new();
        let files = expand(base, pattern, &at(), &mut errors);
        if errors.is_empty() {
            Ok(files
                .iter()
                .map(|f| f.strip_prefix(base).unwrap().to_string_lossy().into_owned())
                .collect())
        } else {
            Err(errors.into_iter().map(|e| e.message).collect())
        }
    }

    #[test]
    fn globs_match_per_component_and_double_star_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for f in ["a.toml", "b.txt", "p/c.toml", "p/q/d.toml", "p/q/r/e.toml"] {
            let path = base.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        assert_eq!(names(base, "*.toml").unwrap(), ["a.toml"]);
        assert_eq!(names(base, "p/*.toml").unwrap(), ["p/c.toml"]);
        assert_eq!(names(base, "*/*/*.toml").unwrap(), ["p/q/d.toml"]);
        assert_eq!(
            names(base, "**/*.toml").unwrap(),
            ["a.toml", "p/c.toml", "p/q/d.toml", "p/q/r/e.toml"]
        );
        assert_eq!(names(base, "p/**/e.toml").unwrap(), ["p/q/r/e.toml"]);
        assert_eq!(names(base, "none/*.toml").unwrap(), Vec::<String>::new());
        assert_eq!(names(base, "b.txt").unwrap(), ["b.txt"]);
        let e = names(base, "none.toml").unwrap_err();
        assert!(e[0].ends_with("none.toml does not exist"), "{e:?}");
        let e = names(base, "[z-a.toml").unwrap_err();
        assert!(e[0].starts_with("invalid glob `[z-a.toml`"), "{e:?}");
    }

    #[test]
    fn a_walk_is_bounded_in_files_and_depth() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let many = base.join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..=MAX_FILES {
            std::fs::write(many.join(format!("{i:04}.toml")), "").unwrap();
        }
        assert_eq!(
            names(base, "many/*.toml").unwrap_err(),
            ["include `many/*.toml` names more than 1000 files: name fewer"]
        );
        let mut deep = base.join("deep");
        for i in 0..=MAX_DEPTH {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let e = names(base, "deep/**/*.toml").unwrap_err();
        assert!(
            e[0].starts_with("include `deep/**/*.toml` reaches more than 8 directories deep"),
            "{e:?}"
        );
    }
}
