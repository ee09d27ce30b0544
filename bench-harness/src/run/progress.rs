//! The run's progress bar on stderr: one tick per pod that turned ready or failed, over every
//! burst of the run. Shown only when asked for (`--no-progress` turns it off) and drawn only when
//! stderr is a terminal; it measures nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr (hidden unless asked for and stderr is a terminal).
#[derive(Debug)]
pub(super) struct Progress(ProgressBar);

impl Progress {
    pub(super) fn new(enabled: bool, pods: u64) -> Self {
        if !enabled {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(pods), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} pods ready or failed",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        Self(bar)
    }

    pub(super) fn pod_done(&self) {
        self.0.inc(1);
    }

    pub(super) fn finish(&self) {
        self.0.finish_and_clear();
    }
}
