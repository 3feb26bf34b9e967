//! A directory laid out exactly like a Kubernetes ConfigMap volume:
//! `routes.yaml -> ..data/routes.yaml`, `..data -> ..<timestamp>`, and an
//! update that writes a new timestamped directory and renames a temporary
//! symlink over `..data` (what the kubelet's atomic writer does).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct ConfigMapDir {
    pub dir: PathBuf,
    generation: u32,
    current: Option<PathBuf>,
}

impl ConfigMapDir {
    /// Creates the layout in `dir` with `routes.yaml` holding `initial`.
    pub fn new(dir: &Path, initial: &str) -> ConfigMapDir {
        let mut cm = ConfigMapDir {
            dir: dir.to_owned(),
            generation: 0,
            current: None,
        };
        cm.swap(initial);
        symlink("..data/routes.yaml", dir.join("routes.yaml")).unwrap();
        cm
    }

    /// The path the gateway is configured with.
    pub fn file(&self) -> PathBuf {
        self.dir.join("routes.yaml")
    }

    /// Publishes new contents the way the kubelet does.
    pub fn swap(&mut self, contents: &str) {
        self.generation += 1;
        let name = format!("..2026_11_25_17_00_00.{:06}", self.generation);
        let ts_dir = self.dir.join(&name);
        std::fs::create_dir(&ts_dir).unwrap();
        std::fs::write(ts_dir.join("routes.yaml"), contents).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = self.current.replace(ts_dir) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}
