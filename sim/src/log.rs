//! Logging through tracing-subscriber, stamped with simulated time; madsim's
//! own span names the node. Filtered by `RUST_LOG` (off when unset).

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

struct SimTime;

impl FormatTime for SimTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match madsim::time::TimeHandle::try_current() {
            Some(t) => write!(w, "{:>12.6}s", t.elapsed().as_secs_f64()),
            None => write!(w, "{:>13}", "-"),
        }
    }
}

/// Installs the subscriber once per process; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_timer(SimTime).with_writer(std::io::stderr).try_init();
}
