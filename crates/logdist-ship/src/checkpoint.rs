//! The checkpoint: for every shipped path, the identity of the file
//! (device + inode) and the offset just past its last **acknowledged** line.
//!
//! It is written atomically (a temporary file in the same directory, then a
//! rename), so a crash of the process leaves either the old or the new
//! checkpoint, never a torn one; at disconnects and at exit the file and its
//! directory are also synced to disk. Should a power loss still leave an
//! unreadable file, it is set aside as `<path>.corrupt` and shipping starts
//! from scratch. Format (JSON):
//!
//! ```json
//! {"version":1,"files":{"/var/log/app.log":{"dev":2049,"ino":131,"offset":5120}}}
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Identity of a file independent of its name: it survives a rename
/// (rotation) and changes when a new file takes the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(metadata: &fs::Metadata) -> FileId {
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// Where shipping of one path stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(flatten)]
    pub id: FileId,
    /// Offset just past the `\n` of the last acknowledged line.
    pub offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub files: BTreeMap<String, Position>,
}

const VERSION: u32 = 1;

impl Checkpoint {
    /// Reads the checkpoint at `path`; a missing file is an empty checkpoint.
    pub fn load(path: &Path) -> io::Result<Checkpoint> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(e) => return Err(e),
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("checkpoint {} is not readable: {e}", path.display()),
            )
        })?;
        if checkpoint.version != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "checkpoint {} has version {}, expected {VERSION}",
                    path.display(),
                    checkpoint.version
                ),
            ));
        }
        Ok(checkpoint)
    }

    /// Reads the checkpoint at `path`; a file that is there but not a
    /// checkpoint (empty, torn, not JSON) is moved aside to `<path>.corrupt`
    /// and an empty checkpoint returned, with the name it was moved to: the
    /// caller warns, and shipping starts from scratch. A checkpoint of
    /// another version, or one that cannot be read at all, is an error.
    pub fn load_or_set_aside(path: &Path) -> io::Result<(Checkpoint, Option<PathBuf>)> {
        match Checkpoint::load(path) {
            Ok(checkpoint) => Ok((checkpoint, None)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData && !is_other_version(path) => {
                let aside = corrupt_path(path);
                fs::rename(path, &aside).map_err(|rename| {
                    io::Error::new(
                        rename.kind(),
                        format!("{e}; cannot move it aside to {}: {rename}", aside.display()),
                    )
                })?;
                Ok((Checkpoint::default(), Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the checkpoint atomically (temp file + rename). With `sync`,
    /// the data is flushed to disk first and the directory after the rename
    /// (survives a power loss, not only a crash of the process).
    pub fn save(&self, path: &Path, sync: bool) -> io::Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            files: &'a BTreeMap<String, Position>,
        }
        let mut text = serde_json::to_vec(&Out {
            version: VERSION,
            files: &self.files,
        })
        .expect("a checkpoint always serializes");
        text.push(b'\n');
        let temp = temp_path(path);
        let mut file = File::create(&temp)?;
        file.write_all(&text)?;
        if sync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&temp, path)?;
        if sync {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn get(&self, file: &str) -> Option<Position> {
        self.files.get(file).copied()
    }

    pub fn set(&mut self, file: &str, position: Position) {
        match self.files.get_mut(file) {
            Some(p) => *p = position,
            None => {
                self.files.insert(file.to_string(), position);
            }
        }
    }
}

/// Whether `path` holds a well-formed checkpoint of another version.
fn is_other_version(path: &Path) -> bool {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    fs::read(path)
        .ok()
        .and_then(|text| serde_json::from_slice::<Versioned>(&text).ok())
        .is_some_and(|v| v.version != VERSION)
}

/// Where an unreadable checkpoint is kept: `<path>.corrupt`.
pub fn corrupt_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".corrupt");
    PathBuf::from(name)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ship.checkpoint");
        assert_eq!(Checkpoint::load(&path).unwrap(), Checkpoint::default());

        let mut c = Checkpoint::default();
        c.set(
            "/var/log/a.log",
            Position {
                id: FileId { dev: 1, ino: 2 },
                offset: 30,
            },
        );
        c.set(
            "/var/log/b.log",
            Position {
                id: FileId { dev: 1, ino: 3 },
                offset: 0,
            },
        );
        c.save(&path, false).unwrap();
        c.set(
            "/var/log/a.log",
            Position {
                id: FileId { dev: 1, ino: 2 },
                offset: 40,
            },
        );
        c.save(&path, true).unwrap();

        let loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(loaded.version, VERSION);
        assert_eq!(loaded.files, c.files);
        assert_eq!(loaded.get("/var/log/a.log").unwrap().offset, 40);
        assert!(!temp_path(&path).exists(), "temporary file renamed away");

        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""/var/log/a.log":{"dev":1,"ino":2,"offset":40}"#),
            "{text}"
        );
    }

    #[test]
    fn corrupt_checkpoint_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        fs::write(&path, "{\"version\":1,\"files\":").unwrap();
        assert_eq!(
            Checkpoint::load(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::write(&path, "{\"version\":7,\"files\":{}}").unwrap();
        assert!(Checkpoint::load(&path).is_err());
    }

    #[test]
    fn a_torn_or_empty_checkpoint_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        for torn in ["", "{\"version\":1,\"files\":"] {
            fs::write(&path, torn).unwrap();
            let (c, aside) = Checkpoint::load_or_set_aside(&path).unwrap();
            assert_eq!(c, Checkpoint::default());
            assert_eq!(aside.as_deref(), Some(&*dir.path().join("cp.corrupt")));
            assert!(!path.exists());
            assert_eq!(
                fs::read_to_string(dir.path().join("cp.corrupt")).unwrap(),
                torn
            );
        }
        // Missing: nothing to set aside.
        let (c, aside) = Checkpoint::load_or_set_aside(&path).unwrap();
        assert_eq!((c, aside), (Checkpoint::default(), None));
        // Another version is not ours to throw away.
        fs::write(&path, "{\"version\":7,\"files\":{}}").unwrap();
        assert!(Checkpoint::load_or_set_aside(&path).is_err());
        assert!(path.exists());
    }

    #[test]
    fn file_identity_follows_renames() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, "x").unwrap();
        let id = FileId::of(&fs::metadata(&a).unwrap());
        let b = dir.path().join("b");
        fs::rename(&a, &b).unwrap();
        assert_eq!(FileId::of(&fs::metadata(&b).unwrap()), id);
        fs::write(&a, "y").unwrap();
        assert_ne!(FileId::of(&fs::metadata(&a).unwrap()), id);
    }
}
