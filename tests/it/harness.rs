//! The harness itself: clusters start, clean up, and real clients work against them.

mod lifecycle;
mod shared_cluster;
mod watchdog;
