//! Anomaly scoring of connections: the built-in isolation forest trained on the host's own
//! history, or a user's ONNX model on the same feature vector.

pub mod features;
pub mod forest;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod training;

use std::{path::Path, sync::Arc};

pub use features::{ConnectFeatures, Features, FEATURE_COUNT, FEATURE_NAMES};
pub use forest::IsolationForest;

/// The tag every scored connection gets (the export's `label` column); `accepted` is an
/// operator's `osprey baseline accept` of what the connection raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    Normal,
    Suspicious,
    Accepted,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Normal => "normal",
            Label::Suspicious => "suspicious",
            Label::Accepted => "accepted",
        }
    }
}

/// Which model gave a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    IsolationForest,
    Onnx,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub value: f32,
    pub label: Label,
    pub model: ModelKind,
    /// The threshold `value` was compared with.
    pub threshold: f32,
}

/// A model file that cannot be used: the model in force keeps scoring.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[cfg(feature = "onnx")]
    #[error(transparent)]
    Onnx(#[from] onnx::ModelError),
    #[error("ONNX model {0}: this build has no ONNX support (feature `onnx`)")]
    Unsupported(std::path::PathBuf),
}

/// The models in force. The ONNX model, when loaded, scores; the forest scores otherwise (and
/// whenever the ONNX model fails at run time, counted in `onnx_failures`).
pub struct Scorer {
    forest: Option<Arc<IsolationForest>>,
    #[cfg(feature = "onnx")]
    onnx: Option<onnx::OnnxModel>,
    threshold: f32,
    #[cfg(feature = "onnx")]
    model_threshold: f32,
    pub onnx_failures: u64,
}

impl Scorer {
    /// `model_threshold` applies to the ONNX model's scores, `threshold` to the forest's.
    #[cfg_attr(not(feature = "onnx"), allow(unused_variables))]
    pub fn new(threshold: f32, model_threshold: f32) -> Self {
        Scorer {
            forest: None,
            #[cfg(feature = "onnx")]
            onnx: None,
            threshold,
            #[cfg(feature = "onnx")]
            model_threshold,
            onnx_failures: 0,
        }
    }

    /// Installs a (re)trained forest.
    pub fn set_forest(&mut self, forest: Arc<IsolationForest>) {
        self.forest = Some(forest);
    }

    pub fn forest(&self) -> Option<&IsolationForest> {
        self.forest.as_deref()
    }

    /// Replaces the ONNX model; on error the models in force stay.
    pub fn load_model(&mut self, path: &Path) -> Result<(), ModelError> {
        #[cfg(feature = "onnx")]
        {
            self.onnx = Some(onnx::OnnxModel::load(path)?);
            Ok(())
        }
        #[cfg(not(feature = "onnx"))]
        Err(ModelError::Unsupported(path.to_path_buf()))
    }

    /// The ONNX model's file, when one scores.
    pub fn model_path(&self) -> Option<&Path> {
        #[cfg(feature = "onnx")]
        return self.onnx.as_ref().map(|m| m.path());
        #[cfg(not(feature = "onnx"))]
        None
    }

    /// `None` while no model exists (before the first training).
    pub fn score(&mut self, x: &Features) -> Option<Score> {
        #[cfg(feature = "onnx")]
        if let Some(model) = &self.onnx {
            match model.score(x) {
                Ok(value) if value.is_finite() => {
                    return Some(self.tag(value, ModelKind::Onnx, self.model_threshold))
                }
                Ok(value) => {
                    self.onnx_failures += 1;
                    tracing::debug!(value, "ONNX model gave a non-finite score");
                }
                Err(error) => {
                    self.onnx_failures += 1;
                    tracing::debug!(%error, "ONNX model failed; the isolation forest scores");
                }
            }
        }
        let forest = self.forest.as_ref()?;
        let value = forest.score(x);
        Some(self.tag(value, ModelKind::IsolationForest, self.threshold))
    }

    fn tag(&self, value: f32, model: ModelKind, threshold: f32) -> Score {
        Score {
            value,
            label: if value > threshold {
                Label::Suspicious
            } else {
                Label::Normal
            },
            model,
            threshold,
        }
    }
}
