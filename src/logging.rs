//! What the process logs: level filters in Codex's syntax or tracing's, text or JSON
//! lines, to stderr or a file, and a filter that changes at run time
//! ([`LogControl`], served as `POST /debug/chronicles/loglevel?level=…`).
//!
//! The node logs through `tracing` and never installs a subscriber itself: an
//! application embedding it keeps its own. [`init`] (feature `logging`) is the one the
//! reference node uses; give its [`Logging`] to [`crate::NodeConfig::log_control`] so
//! the API can change the level.
//!
//! Levels ([`parse_level`]) are read in either syntax:
//! - Codex's (chronicles): `LEVEL[;LEVEL: topic,topic[;…]]`, e.g.
//!   `INFO;TRACE: codex_net,codex_market`. Levels are TRACE, DEBUG, INFO, NOTICE (=
//!   INFO), WARN, ERROR, FATAL (= ERROR) and NONE (nothing), any case; a topic is a
//!   `tracing` target, i.e. a module path of ours (`codex_net::exchange`, `codex::node`).
//! - tracing's `EnvFilter` directives: `info,codex_net=debug,libp2p_kad=off`.

use std::sync::Arc;

/// Changes what the process logs while it runs.
pub trait LogControl: Send + Sync + std::fmt::Debug + 'static {
    /// Logs what `level` ([`parse_level`]) lets through from now on, and returns the
    /// filter applied as `EnvFilter` directives.
    fn set_level(&self, level: &str) -> Result<String, LogLevelError>;
    /// The filter in force, as `EnvFilter` directives.
    fn level(&self) -> String;
}

/// A shared [`LogControl`].
pub type SharedLogControl = Arc<dyn LogControl>;

/// A log level or filter that cannot be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("bad log level {level:?}: {reason}")]
pub struct LogLevelError {
    /// What was given.
    pub level: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(level: &str, reason: impl Into<String>) -> LogLevelError {
    LogLevelError {
        level: level.to_string(),
        reason: reason.into(),
    }
}

/// A chronicles level as a tracing level directive.
fn chronicles_level(word: &str) -> Option<&'static str> {
    Some(match word.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" | "NOTICE" => "info",
        "WARN" | "WARNING" => "warn",
        "ERROR" | "FATAL" => "error",
        "NONE" | "OFF" => "off",
        _ => return None,
    })
}

/// A target name tracing takes: a Rust path (letters, digits, `_`, `::`), or a
/// chronicles topic whose `-` stands for `_`.
fn target_name(topic: &str) -> Option<String> {
    let t = topic.trim().replace('-', "_");
    let ok = !t.is_empty()
        && t.split("::")
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    ok.then_some(t)
}

/// `level` in either syntax (see the module) as `EnvFilter` directives, checked.
pub fn parse_level(level: &str) -> Result<String, LogLevelError> {
    #[cfg(feature = "logging")]
    return imp::filter(level).map(|(directives, _)| directives);
    #[cfg(not(feature = "logging"))]
    directives(level)
}

/// `level` as `EnvFilter` directives, its syntax checked.
fn directives(level: &str) -> Result<String, LogLevelError> {
    let trimmed = level.trim();
    if trimmed.is_empty() {
        return Err(bad(level, "empty"));
    }
    let chronicles = trimmed.contains(';')
        || chronicles_level(trimmed).is_some()
        || trimmed
            .split_once(':')
            .is_some_and(|(l, rest)| !rest.starts_with(':') && chronicles_level(l).is_some());
    let directives = if chronicles {
        let mut out = Vec::new();
        for (i, part) in trimmed.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once(':') {
                Some((word, topics)) => {
                    let lvl = chronicles_level(word)
                        .ok_or_else(|| bad(level, format!("unknown level {:?}", word.trim())))?;
                    let mut any = false;
                    for topic in topics.split(',').filter(|t| !t.trim().is_empty()) {
                        let target = target_name(topic)
                            .ok_or_else(|| bad(level, format!("bad topic {:?}", topic.trim())))?;
                        out.push(format!("{target}={lvl}"));
                        any = true;
                    }
                    if !any {
                        return Err(bad(level, format!("no topic after {:?}", word.trim())));
                    }
                }
                None if i == 0 => {
                    let lvl = chronicles_level(part)
                        .ok_or_else(|| bad(level, format!("unknown level {part:?}")))?;
                    out.insert(0, lvl.to_string());
                }
                None => {
                    return Err(bad(
                        level,
                        format!("{part:?}: only the first part is a level without topics"),
                    ));
                }
            }
        }
        out.join(",")
    } else {
        // A bare word is a level, never a target at every level (EnvFilter's reading):
        // `LOUD` is a typo, not "everything of the target LOUD".
        for d in trimmed.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if !d.contains('=') && chronicles_level(d).is_none() {
                return Err(bad(
                    level,
                    format!("unknown level {d:?} (a target takes `target=level`)"),
                ));
            }
        }
        trimmed.to_string()
    };
    Ok(directives)
}

#[cfg(feature = "logging")]
pub use imp::{LogFormat, LogSettings, Logging, init};

#[cfg(feature = "logging")]
mod imp {
    use std::path::PathBuf;
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::reload;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Registry};

    use super::{LogControl, LogLevelError, bad, directives};

    /// `level` read ([`super::parse_level`]) into directives and the filter they make.
    pub(super) fn filter(level: &str) -> Result<(String, EnvFilter), LogLevelError> {
        let directives = directives(level)?;
        let filter = EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| bad(level, e.to_string()))?;
        Ok((directives, filter))
    }

    /// How each line is written.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum LogFormat {
        /// Human-readable lines (colours on a terminal).
        #[default]
        Text,
        /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, `spans`.
        Json,
    }

    impl std::str::FromStr for LogFormat {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            match s.to_ascii_lowercase().as_str() {
                "text" | "auto" | "colors" | "nocolors" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("unknown log format {other:?} (text or json)")),
            }
        }
    }

    /// What [`init`] sets up.
    #[derive(Clone, Debug)]
    pub struct LogSettings {
        /// The filter ([`parse_level`]); default `info`.
        pub level: String,
        /// Text or JSON lines.
        pub format: LogFormat,
        /// Append to this file instead of writing to stderr.
        pub file: Option<PathBuf>,
    }

    impl Default for LogSettings {
        fn default() -> Self {
            LogSettings {
                level: "info".into(),
                format: LogFormat::Text,
                file: None,
            }
        }
    }

    /// The installed subscriber's filter, which [`LogControl`] changes.
    #[derive(Clone)]
    pub struct Logging {
        handle: reload::Handle<EnvFilter, Registry>,
    }

    impl std::fmt::Debug for Logging {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Logging")
                .field("level", &self.level())
                .finish()
        }
    }

    /// Installs the process's subscriber (once per process) and returns the handle that
    /// changes its level.
    /// [`crate::Error::LogLevel`], [`crate::Error::LogFile`] or
    /// [`crate::Error::LoggerInstalled`] when it cannot.
    pub fn init(settings: &LogSettings) -> crate::Result<Logging> {
        let (_, filter) = filter(&settings.level)?;
        let (filter, handle) = reload::Layer::new(filter);
        let file = match &settings.file {
            Some(path) => Some(Arc::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| crate::Error::LogFile {
                        path: path.clone(),
                        source,
                    })?,
            )),
            None => None,
        };
        let registry = tracing_subscriber::registry().with(filter);
        let result = match (settings.format, file) {
            (LogFormat::Text, None) => registry
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .try_init(),
            (LogFormat::Text, Some(file)) => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(file),
                )
                .try_init(),
            (LogFormat::Json, None) => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr),
                )
                .try_init(),
            (LogFormat::Json, Some(file)) => registry
                .with(tracing_subscriber::fmt::layer().json().with_writer(file))
                .try_init(),
        };
        result.map_err(|e| crate::Error::LoggerInstalled(e.to_string()))?;
        Ok(Logging { handle })
    }

    impl LogControl for Logging {
        fn set_level(&self, level: &str) -> Result<String, LogLevelError> {
            let (directives, filter) = filter(level)?;
            self.handle
                .reload(filter)
                .map_err(|e| bad(level, format!("the logger is gone: {e}")))?;
            tracing::info!(level = %directives, "log level changed");
            Ok(directives)
        }

        fn level(&self) -> String {
            self.handle
                .with_current(|f| f.to_string())
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_levels_become_directives() -> Result<(), LogLevelError> {
        assert_eq!(parse_level("DEBUG")?, "debug");
        assert_eq!(parse_level("notice")?, "info");
        assert_eq!(parse_level("FATAL")?, "error");
        assert_eq!(parse_level("NONE")?, "off");
        assert_eq!(
            parse_level("INFO;TRACE: codex_net,codex_market;DEBUG:codex::node")?,
            "info,codex_net=trace,codex_market=trace,codex::node=debug"
        );
        assert_eq!(
            parse_level("TRACE: codex_net")?,
            "codex_net=trace",
            "topics alone keep the default level"
        );
        Ok(())
    }

    #[test]
    fn tracing_directives_pass_through() -> Result<(), LogLevelError> {
        assert_eq!(parse_level("info,codex_net=debug")?, "info,codex_net=debug");
        assert_eq!(parse_level("codex::node=trace")?, "codex::node=trace");
        Ok(())
    }

    #[test]
    fn bad_levels_are_refused_with_the_reason() {
        for bad in [
            "",
            "LOUD",
            "INFO;LOUD: x",
            "INFO;TRACE:",
            "INFO;TRACE: a b",
            "INFO;DEBUG",
        ] {
            let Err(e) = parse_level(bad) else {
                panic!("{bad:?} was taken");
            };
            assert_eq!(e.level, bad);
            assert!(!e.reason.is_empty());
        }
    }

    #[cfg(feature = "logging")]
    #[test]
    fn bad_directives_are_refused() {
        assert!(parse_level("info,codex_net=loud").is_err());
    }
}
