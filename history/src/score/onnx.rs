//! A user-trained model in ONNX (tract, pure Rust): one float32 input of shape
//! `[1, FEATURE_COUNT]` (the feature vector), and a first output whose first element is the
//! score, higher meaning more anomalous. docs/history.md shows how to train one from the
//! CSV export.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use super::features::{Features, FEATURE_COUNT};

/// Why a model file cannot be used; the previous model keeps scoring.
#[derive(Debug, thiserror::Error)]
#[error("ONNX model {path}: {reason}")]
pub struct ModelError {
    pub path: PathBuf,
    pub reason: String,
}

pub struct OnnxModel {
    path: PathBuf,
    plan: TypedRunnableModel<TypedModel>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .finish()
    }
}

impl OnnxModel {
    /// Loads, checks the input shape, and scores one zero vector so a model that loads but
    /// cannot run (or gives no float) fails here, not on the first connection.
    pub fn load(path: &Path) -> Result<OnnxModel, ModelError> {
        let error = |reason: String| ModelError {
            path: path.to_path_buf(),
            reason,
        };
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, FEATURE_COUNT]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                error(format!(
                    "not a usable model with one float32 input of shape [1, {FEATURE_COUNT}]: {e:#}"
                ))
            })?;
        let model = OnnxModel {
            path: path.to_path_buf(),
            plan,
        };
        let probe = model
            .score(&[0.0; FEATURE_COUNT])
            .map_err(|e| error(format!("does not run: {e}")))?;
        if !probe.is_finite() {
            return Err(error(format!("scores a zero vector as {probe}")));
        }
        Ok(model)
    }

    pub fn score(&self, x: &Features) -> Result<f32, String> {
        let input = Tensor::from_shape(&[1, FEATURE_COUNT], x).map_err(|e| format!("{e:#}"))?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| format!("{e:#}"))?;
        let first = outputs.first().ok_or("the model has no output")?;
        let view = first
            .to_array_view::<f32>()
            .map_err(|e| format!("first output is not float32: {e:#}"))?;
        view.iter()
            .next()
            .copied()
            .ok_or_else(|| "first output is empty".to_string())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
