//! Development key files: created once, whole. Replicas (or tests) that start together on one
//! machine may all find the file missing; each writes its key to a private temporary file and
//! links it into place, so the first link wins and no one ever reads a half-written key.

use std::{io::Write, path::Path};

/// Puts `contents` at `path` (mode 0600) unless a file is already there; `true` when this call
/// created it.
pub fn create_once(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let staging = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        uuid::Uuid::new_v4().simple()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&staging)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&staging, path));
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(true),
        // Another replica or test created it first; use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_many_creators_at_once_one_wins_and_everyone_reads_a_whole_key() {
        for trial in 0..5 {
            let dir = std::env::temp_dir().join(format!("key-file-{}", uuid::Uuid::new_v4()));
            let path = dir.join("dev.key");
            let created: Vec<bool> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8u8)
                    .map(|i| {
                        let path = &path;
                        scope.spawn(move || {
                            let created = create_once(path, &[i; 4096]).unwrap();
                            let read = std::fs::read(path).unwrap();
                            assert_eq!(read.len(), 4096, "trial {trial}: a partial key was read");
                            assert!(read.iter().all(|b| *b == read[0]));
                            created
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(created.iter().filter(|c| **c).count(), 1, "trial {trial}");
            let leftovers = std::fs::read_dir(&dir).unwrap().count();
            assert_eq!(leftovers, 1, "no staging file stays behind");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
