//! A `--target` argument: which server, its name in reports and whether it
//! has snapshots of its own.

use std::fmt;
use std::str::FromStr;

use crate::vllm::Frontend;

/// A `--target` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Reference,
    Url {
        base: String,
        name: Option<String>,
    },
    VllmRs,
    VllmPython,
    /// A real frontend in front of a real CPU engine core, through the tap.
    RealEngine(Frontend),
}

impl TargetSpec {
    /// The name in reports, and the snapshot folder when it has one.
    pub fn name(&self) -> String {
        match self {
            Self::Reference => "reference".into(),
            Self::VllmRs => "vllm-rs".into(),
            Self::VllmPython => "vllm-python".into(),
            Self::RealEngine(Frontend::Rust) => "vllm-rs+engine".into(),
            Self::RealEngine(Frontend::Python) => "vllm-python+engine".into(),
            Self::Url { name: Some(n), .. } => n.clone(),
            Self::Url { base, name: None } => format!("url:{base}"),
        }
    }

    /// Whether this target's transcripts are checked against snapshots: a
    /// real engine answers with what its model generates, so its transcripts
    /// are recordings (see `genconform record`), not reviewed snapshots.
    pub fn has_snapshots(&self) -> bool {
        !matches!(self, Self::Url { name: None, .. } | Self::RealEngine(_))
    }

    /// The real frontend this target runs, if it runs one.
    /// Whether the server merges engine outputs that queued up while it
    /// was busy into one chunk (vLLM's Python frontend does), so that a
    /// paced case's chunking depends on how busy the machine is.
    pub fn merges_queued_steps(&self) -> bool {
        self.frontend() == Some(Frontend::Python)
    }

    pub fn frontend(&self) -> Option<Frontend> {
        match self {
            Self::VllmRs => Some(Frontend::Rust),
            Self::VllmPython => Some(Frontend::Python),
            Self::RealEngine(frontend) => Some(*frontend),
            Self::Reference | Self::Url { .. } => None,
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reference" => return Ok(Self::Reference),
            "vllm-rs" => return Ok(Self::VllmRs),
            "vllm-python" => return Ok(Self::VllmPython),
            "vllm-rs+engine" => return Ok(Self::RealEngine(Frontend::Rust)),
            "vllm-python+engine" => return Ok(Self::RealEngine(Frontend::Python)),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("url=") {
            let mut parts = rest.split(',');
            let base = parts
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!(
                    "`{s}`: the url must start with http:// or https:// (e.g. url=http://127.0.0.1:8000)"
                ));
            }
            let mut name = None;
            for part in parts {
                match part.split_once('=') {
                    Some(("name", n)) if valid_name(n) => name = Some(n.to_string()),
                    Some(("name", n)) => {
                        return Err(format!(
                            "`{s}`: name `{n}` may hold only ASCII letters, digits, `_`, `-` and `.` \
                             (it names a snapshot folder)"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "`{s}`: unknown option `{part}` (expected name=<name>)"
                        ));
                    }
                }
            }
            return Ok(Self::Url { base, name });
        }
        Err(format!(
            "unknown target `{s}`; expected `reference`, `vllm-rs`, `vllm-python`, \
             `vllm-rs+engine`, `vllm-python+engine` or `url=<base>[,name=<name>]`"
        ))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!("reference".parse(), Ok(TargetSpec::Reference));
        assert_eq!(
            "url=http://127.0.0.1:9/,name=mine".parse(),
            Ok(TargetSpec::Url {
                base: "http://127.0.0.1:9".into(),
                name: Some("mine".into())
            })
        );
        let e = "url=localhost:9".parse::<TargetSpec>().unwrap_err();
        assert!(e.contains("must start with http://"), "{e}");
        let e = "url=http://x,nmae=a".parse::<TargetSpec>().unwrap_err();
        assert!(e.contains("unknown option `nmae=a`"), "{e}");
        let e = "vllm".parse::<TargetSpec>().unwrap_err();
        assert!(e.contains("unknown target `vllm`"), "{e}");
        let real: TargetSpec = "vllm-python+engine".parse().unwrap();
        assert_eq!(real, TargetSpec::RealEngine(Frontend::Python));
        assert_eq!(real.name(), "vllm-python+engine");
        assert_eq!(real.frontend(), Some(Frontend::Python));
        assert!(
            !real.has_snapshots(),
            "a real engine's answers are recordings"
        );
        assert_eq!(
            "vllm-rs+engine".parse::<TargetSpec>().unwrap().name(),
            "vllm-rs+engine"
        );
        assert!(e.contains("vllm-rs+engine"), "{e}");
    }
}
