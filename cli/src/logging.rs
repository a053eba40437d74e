//! Logging: structured lines on stderr, level from `RIVULET_LOG` (an
//! `EnvFilter` spec such as `info` or `rivulet_metadata=debug,openraft=warn`),
//! and for a node `node=<id>` at the start of every line — openraft's and
//! tonic's lines included, which our spans do not reach.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Prefixes every event with `node=<id> `.
struct WithNode<F> {
    node: Option<u64>,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some(id) = self.node {
            write!(writer, "node={id} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber. `default` applies when `RIVULET_LOG` is unset.
pub fn init(node: Option<u64>, default: &str) {
    let filter = EnvFilter::try_from_env("RIVULET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(WithNode {
            node,
            inner: tracing_subscriber::fmt::format(),
        })
        .init();
}
