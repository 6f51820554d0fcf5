//! The directory's `LOCK` file: one spool per directory.
//!
//! An advisory lock (`flock` on Unix, through [`File::try_lock`]) held for
//! the spool's lifetime; the kernel drops it when the process dies, so a
//! crash never leaves a stale lock behind. The holder's pid is written into
//! the file only to say who holds it. The lock belongs to the open file, so
//! a second open in the same process is refused too.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::OpenError;

pub(crate) const LOCK_FILE: &str = "LOCK";

/// Held while the spool is open; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        let io_error = |source| OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder(&file),
                });
            }
            Err(TryLockError::Error(err)) => return Err(io_error(err)),
        }
        write_pid(&mut file).map_err(io_error)?;
        Ok(DirLock { _file: file })
    }
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "pid {}", std::process::id())
}

/// Who holds the lock, as its file says.
fn holder(file: &File) -> String {
    let mut text = String::new();
    // A holder that is still writing its pid, or a file that is not text,
    // leaves the holder unknown; the lock itself is what counts.
    let read = file.take(256).read_to_string(&mut text).is_ok();
    let text = text.trim();
    if !read || text.is_empty() {
        return "holder unknown".to_string();
    }
    if text == format!("pid {}", std::process::id()) {
        format!("{text}, this process")
    } else {
        text.chars().take(64).collect()
    }
}
