//! Rollback protection on a host: the highest bundle serial launched per agent.
//!
//! Input: a store path (e.g. `/var/lib/aegis/serials.json`), an agent name and the serial of
//! the bundle about to launch. Output: `Ok` (and the serial recorded) or
//! [`BundleError::Rollback`]. Invariants: the check and the update happen under an exclusive
//! `flock` on `<path>.lock`, so concurrent launches cannot both pass with older serials; the
//! store is replaced by rename, so it is always complete; a corrupt store refuses every
//! launch (fail closed) instead of being reset. Equal serials pass: relaunching the same
//! bundle is not a rollback.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::BundleError;
use super::names::check_identifier;

/// The per-host record of launched serials.
#[derive(Clone, Debug)]
pub struct SerialStore {
    path: PathBuf,
}

impl SerialStore {
    pub fn new(path: impl Into<PathBuf>) -> SerialStore {
        SerialStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn werr(&self, action: &'static str) -> impl Fn(std::io::Error) -> BundleError + '_ {
        move |source| BundleError::Write {
            action,
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> Result<File, BundleError> {
        if let Some(parent) = self.path.parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent).map_err(self.werr("create the directory of"))?;
        }
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(self.werr("open the lock file of"))?;
        f.lock().map_err(self.werr("lock"))?;
        Ok(f)
    }

    fn read(&self) -> Result<BTreeMap<String, u64>, BundleError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BundleError::SerialStoreCorrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(BundleError::Write {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The highest serial recorded for `agent`.
    pub fn highest(&self, agent: &str) -> Result<Option<u64>, BundleError> {
        let _lock = self.lock()?;
        Ok(self.read()?.get(agent).copied())
    }

    /// Refuses `serial` if a higher one was launched for `agent`; records it otherwise.
    pub fn check_and_record(&self, agent: &str, serial: u64) -> Result<(), BundleError> {
        check_identifier("agent name", agent)?;
        let _lock = self.lock()?;
        let mut map = self.read()?;
        if let Some(&highest) = map.get(agent) {
            if serial < highest {
                return Err(BundleError::Rollback {
                    agent: agent.to_string(),
                    serial,
                    min_serial: highest,
                });
            }
            if serial == highest {
                return Ok(());
            }
        }
        map.insert(agent.to_string(), serial);
        let mut bytes = serde_json::to_vec_pretty(&map).map_err(|e| BundleError::SerialStoreCorrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut f = File::create(&tmp).map_err(self.werr("write"))?;
            f.write_all(&bytes).map_err(self.werr("write"))?;
            // The record must survive a crash, or a rollback becomes possible after reboot.
            f.sync_all().map_err(self.werr("sync"))?;
            fs::rename(&tmp, &self.path).map_err(self.werr("replace"))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}
