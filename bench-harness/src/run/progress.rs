//! The run's progress bar on stderr: one tick per pod that turned ready or failed, over every
//! burst of the run. Shown only when asked for (`--no-progress` turns it off) and drawn only when
//! stderr is a terminal; it measures nothing.

/// A progress bar on stderr (only when asked for and stderr is a terminal).
#[derive(Debug)]
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(super) fn new(enabled: bool, pods: u64) -> Self {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(pods),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} pods ready or failed",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar
        });
        Self { bar }
    }

    pub(super) fn pod_done(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
