use std::path::{Path, PathBuf};

/// What can go wrong opening or using the history file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history file {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history schema version {found} is newer than this Osprey knows ({known}): upgrade Osprey or point it at another file")]
    NewerSchema { found: u32, known: u32 },
    #[error("history file {path}: {source}")]
    At {
        path: PathBuf,
        source: Box<HistoryError>,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A look-up or export that cannot run as asked.
    #[error("{0}")]
    Query(String),
    #[error("history writer thread: {0}")]
    Thread(String),
}

impl HistoryError {
    pub(crate) fn open(path: &Path, reason: impl ToString) -> Self {
        HistoryError::Open {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    /// The same error, naming the file it concerns.
    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            e @ (HistoryError::Open { .. } | HistoryError::Io { .. } | HistoryError::At { .. }) => {
                e
            }
            e => HistoryError::At {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }
}
