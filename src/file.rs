//! Reading the files a configuration names: certificates, keys, CA bundles,
//! password files and included configs. The one rule: only a regular file, at
//! most a size cap, and never a read that can hang the caller.
//!
//! - The path is checked with `stat` first, then opened non-blocking (on unix,
//!   `O_NONBLOCK`: opening a FIFO with no writer would otherwise wait forever)
//!   and checked again with `fstat`, so a FIFO, a device (`/dev/zero`), a
//!   socket or a directory is refused by name, even one swapped in between.
//! - The read stops one byte past the cap: a huge file is refused without
//!   being read whole.
//! - `read` (async) gives up at its deadline; the blocking thread it used may
//!   stay behind only on a hung file system, and `main` does not wait for it
//!   at exit.
//!
//! A leaf module: it depends on nothing else in the crate. Errors carry the
//! reason only; callers say which file and what for.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest file read from configuration: certificates, keys and configs
/// are kilobytes; a megabyte is already a mistake.
pub(crate) const MAX_SIZE: u64 = 1024 * 1024;

/// The largest configuration file: a probe takes about 100 bytes, so a single
/// file of 100,000 probes is about 10 MB. Larger fleets split their probes
/// over `include`d files.
pub(crate) const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// How long an async read waits for a file system before giving up, for
/// callers without a deadline of their own.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a file could not be read. The message is the reason alone
/// ("not a regular file (a FIFO)"), without the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The operating system said no: "No such file or directory".
    #[error("{0}")]
    Io(String),
    /// A FIFO, a device, a socket or a directory.
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("larger than {} bytes", .0)]
    TooLarge(u64),
    #[error("gave up after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

/// Reads the regular file at `path`, at most `cap` bytes, blocking.
pub(crate) fn read_blocking(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| ReadError::Io(io_reason(&e)))?;
    regular(&meta)?;
    if meta.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    let file = open(path).map_err(|e| ReadError::Io(io_reason(&e)))?;
    regular(&file.metadata().map_err(|e| ReadError::Io(io_reason(&e)))?)?;
    let mut data = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| ReadError::Io(io_reason(&e)))?;
    if data.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(data)
}

/// `read_blocking` as UTF-8 text; `Err(None)` when the bytes are not UTF-8.
pub(crate) fn read_to_string_blocking(path: &Path, cap: u64) -> Result<String, Option<ReadError>> {
    let data = read_blocking(path, cap).map_err(Some)?;
    String::from_utf8(data).map_err(|_| None)
}

/// Reads the regular file at `path`, at most `cap` bytes, giving up after
/// `timeout`.
pub(crate) async fn read(path: &Path, cap: u64, timeout: Duration) -> Result<Vec<u8>, ReadError> {
    let owned: PathBuf = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || read_blocking(&owned, cap));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ReadError::Io(format!("the read failed: {join}"))),
        Err(_) => Err(ReadError::TimedOut(timeout)),
    }
}

#[cfg(unix)]
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

fn regular(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    Err(ReadError::NotRegular(kind_of(&t)))
}

#[cfg(unix)]
fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// An I/O error as a reason: "No such file or directory", without the
/// "(os error 2)" suffix.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A FIFO at `path`, made by mkfifo(1); nothing ever writes to it.
    #[cfg(unix)]
    pub(crate) fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.unwrap().success(), "mkfifo {}", path.display());
    }

    #[test]
    fn a_regular_file_is_read_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_blocking(&path, 10).unwrap(), b"0123456789");
        assert_eq!(read_blocking(&path, 9), Err(ReadError::TooLarge(9)));
        assert_eq!(
            read_blocking(&dir.path().join("none"), 10),
            Err(ReadError::Io("No such file or directory".into()))
        );
        assert_eq!(
            read_blocking(dir.path(), 10).unwrap_err().to_string(),
            "not a regular file (a directory)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        assert_eq!(
            read_blocking(&fifo, MAX_SIZE).unwrap_err().to_string(),
            "not a regular file (a FIFO)"
        );
        // Even when asked for directly, the open itself cannot block.
        assert!(open(&fifo).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_endless_device_is_refused() {
        assert_eq!(
            read_blocking(Path::new("/dev/zero"), MAX_SIZE)
                .unwrap_err()
                .to_string(),
            "not a regular file (a character device)"
        );
    }

    #[tokio::test]
    async fn the_async_read_follows_the_same_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x".repeat(2000)).unwrap();
        let e = read(&path, 1000, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.to_string(), "larger than 1000 bytes");
        assert_eq!(
            read(&path, 2000, Duration::from_secs(5))
                .await
                .unwrap()
                .len(),
            2000
        );
    }
}
