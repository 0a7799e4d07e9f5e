//! Where the admin token lives between commands.
//!
//! `login` writes the JWT to `$XDG_CONFIG_HOME/fleetgate/token` (or
//! `~/.config/fleetgate/token` without `XDG_CONFIG_HOME`). The file is
//! created with mode 0600, in a directory created with mode 0700, and
//! written to a temporary name first and renamed, so a reader never sees a
//! half-written token and a file left with a wider mode is replaced, not
//! reused. Every other command takes `FLEETGATE_TOKEN` when it is set and
//! not empty, else the file.
//!
//! The lookup takes its environment as a parameter ([`TokenEnv`]), so the
//! tests never change the process environment.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::CtlError;

/// The largest token file read. A JWT from the gateway is a few hundred
/// bytes; anything this large is not a token.
pub const MAX_TOKEN_FILE: u64 = 16 * 1024;

/// The environment variable that overrides the stored token.
pub const TOKEN_VAR: &str = "FLEETGATE_TOKEN";

/// The parts of the environment that decide where the token comes from.
#[derive(Clone, Debug, Default)]
pub struct TokenEnv {
    pub token: Option<String>,
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl TokenEnv {
    /// Reads the three variables from the process environment.
    pub fn from_process() -> TokenEnv {
        let path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        TokenEnv {
            token: std::env::var(TOKEN_VAR)
                .ok()
                .filter(|t| !t.trim().is_empty()),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            home: path("HOME"),
        }
    }

    /// The token file's path. `XDG_CONFIG_HOME` must be absolute to count,
    /// as the XDG base directory specification says.
    pub fn token_path(&self) -> Result<PathBuf, CtlError> {
        let config = match (&self.xdg_config_home, &self.home) {
            (Some(xdg), _) if xdg.is_absolute() => xdg.clone(),
            (_, Some(home)) => home.join(".config"),
            _ => {
                return Err(CtlError::Local(
                    "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the token".into(),
                ))
            }
        };
        Ok(config.join("fleetgate").join("token"))
    }

    /// The token to send: `FLEETGATE_TOKEN`, else the token file's.
    pub fn load(&self) -> Result<String, CtlError> {
        if let Some(token) = &self.token {
            return Ok(token.trim().to_owned());
        }
        let path = self.token_path()?;
        match read_token(&path) {
            Ok(token) => Ok(token),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CtlError::NotLoggedIn),
            Err(e) => Err(CtlError::Local(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))),
        }
    }
}

fn read_token(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_TOKEN_FILE} bytes: not a token"),
        ));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(token.to_owned())
}

/// Writes `token` to `path` with mode 0600, creating its directory with
/// mode 0700, through a temporary file renamed into place.
pub fn store(path: &Path, token: &str) -> Result<(), CtlError> {
    let fail = |what: &str, e: std::io::Error| {
        CtlError::Local(format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .ok_or_else(|| CtlError::Local(format!("{} has no directory", path.display())))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("create the directory of", e))?;
    let tmp = dir.join(format!(".token.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode given to open is masked by the umask; 0600 is what the
        // file must have whatever the umask is.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail("write the token file", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(dir: &Path) -> TokenEnv {
        TokenEnv {
            token: None,
            xdg_config_home: Some(dir.to_path_buf()),
            home: None,
        }
    }

    #[test]
    fn stored_token_has_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let path = env.token_path().unwrap();
        assert_eq!(path, dir.path().join("fleetgate/token"));
        store(&path, "abc.def.ghi").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(env.load().unwrap(), "abc.def.ghi");
    }

    #[test]
    fn a_wider_file_is_replaced_by_a_0600_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = env_in(dir.path()).token_path().unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        store(&path, "new").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
    }

    #[test]
    fn the_variable_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = env_in(dir.path());
        store(&env.token_path().unwrap(), "from-file").unwrap();
        env.token = Some("from-env".into());
        assert_eq!(env.load().unwrap(), "from-env");
    }

    #[test]
    fn no_file_means_not_logged_in() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            env_in(dir.path()).load(),
            Err(CtlError::NotLoggedIn)
        ));
    }

    #[test]
    fn home_is_the_fallback_and_a_relative_xdg_is_ignored() {
        let env = TokenEnv {
            token: None,
            xdg_config_home: Some("relative".into()),
            home: Some("/home/op".into()),
        };
        assert_eq!(
            env.token_path().unwrap(),
            Path::new("/home/op/.config/fleetgate/token")
        );
    }

    #[test]
    fn a_token_file_at_the_cap_is_read_and_over_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let path = env.token_path().unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "t".repeat(MAX_TOKEN_FILE as usize)).unwrap();
        assert_eq!(env.load().unwrap().len(), MAX_TOKEN_FILE as usize);
        fs::write(&path, "t".repeat(MAX_TOKEN_FILE as usize + 1)).unwrap();
        let err = env.load().unwrap_err().to_string();
        assert!(err.contains("not a token"), "{err}");
        // The message names the file, never its contents.
        assert!(!err.contains("ttt"), "{err}");
    }
}
